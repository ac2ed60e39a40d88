"""``atlbench cka``: layer x layer CKA of two models on a target split, as CSV, SVG and a table.

The comparison itself is :func:`atlbench._layer_study.compare_on_task`, the one a sweep's CKA tasks
run; this module only builds the two models from the command line, writes the files and prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from atlbench._cache import atomic_write_text
from atlbench._layer_study import compare_on_task, load_encoder_checkpoint
from atlbench.errors import AtlbenchError
from atlbench.similarity import CKAResult
from atlbench.sources._base import Encoder
from atlbench.study import Study, load_study

__all__ = ["cka_command", "diagonal_lines"]


def _build(study: Study, source_id: str, pretrained: bool, checkpoint: Path | None) -> Encoder:
    study.pick("source", [source_id])
    encoder = study.source(source_id).build(pretrained)
    if checkpoint is not None:
        load_encoder_checkpoint(encoder, checkpoint)
    return encoder.eval()


def cka_command(
    suite_path: str | Path,
    a: str,
    b: str,
    target: str,
    a_checkpoint: Path | None = None,
    b_checkpoint: Path | None = None,
    split: str = "test",
    max_examples: int | None = 1000,
    batch_size: int | None = 500,
    debiased: bool = False,
    out: Path = Path("cka"),
    device: str | None = None,
    echo: Callable[[str], None] = print,
) -> CKAResult:
    """``atlbench cka``: layer x layer CKA of two models on a target split, as CSV + SVG.

    ``b`` may be ``scratch``: model A's architecture with random weights (or, with
    ``b_checkpoint``, a scratch-trained checkpoint of it).
    """
    from atlbench._timing import resolve_device

    study = load_study(suite_path)
    if split not in ("train", "val", "test"):
        raise AtlbenchError(f"--split must be train, val or test, not {split!r}")
    study.pick("target", [target])
    model_a = _build(study, a, True, a_checkpoint)
    model_b = _build(study, a if b == "scratch" else b, b != "scratch", b_checkpoint)
    task = study.target(target).load()
    if model_a.modality != task.modality or model_b.modality != task.modality:
        raise AtlbenchError(f"target {target!r} is {task.modality}; both models must read it")
    dev = resolve_device(device or study.suite.device)
    res, n_split = compare_on_task(
        model_a, model_b, task, split, dev, max_examples, batch_size, debiased
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = res.to_frame()
    frame.index.name = f"{a} \\ {b}"
    atomic_write_text(out / "cka.csv", frame.to_csv(float_format="%.6g"))
    _heatmap(res, f"CKA {a} vs {b} on {target}/{split} (n={res.n_examples})", out / "cka.svg")
    echo(f"linear CKA{' (debiased)' if debiased else ''} on {res.n_examples} of {n_split} "
         f"{target}/{split} examples; wrote {out / 'cka.csv'} and {out / 'cka.svg'}")  # fmt: skip
    for line in diagonal_lines(res):
        echo(line)
    return res


def diagonal_lines(res: CKAResult) -> Iterator[str]:
    """Layer-by-layer CKA where both models have the same layers (else the best match per row)."""
    same = res.layers_a == res.layers_b
    width = max(len(n) for n in res.layers_a)
    yield f"{'layer':<{width}}  {'CKA' if same else 'best CKA (layer of B)'}"
    for i, name in enumerate(res.layers_a):
        row = res.matrix[i]
        if same:
            yield f"{name:<{width}}  {row[i]:.4f}"
        elif np.isfinite(row).any():
            j = int(np.nanargmax(row))
            yield f"{name:<{width}}  {row[j]:.4f} ({res.layers_b[j]})"
        else:
            yield f"{name:<{width}}  nan"


def _heatmap(res: CKAResult, title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    rows, cols = res.layers_a, res.layers_b
    fig = Figure(figsize=(2.0 + 0.4 * len(cols), 1.6 + 0.35 * len(rows)))
    ax = fig.subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = ax.imshow(res.matrix, vmin=0, vmax=1, cmap="magma", origin="lower")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("model B")
    ax.set_ylabel("model A")
    fig.colorbar(image, ax=ax, label="CKA")
    ax.set_title(title, fontsize=9)
    tmp = path.with_suffix(".svg.tmp")
    fig.savefig(tmp, format="svg", bbox_inches="tight")
    tmp.replace(path)
