"""Layer study: which blocks did fine-tuning change, and how close is transfer to scratch training?

After a sweep with ``cka: true`` every fine-tuned cell (a pre-trained, trainable strategy that kept
its checkpoint) is compared layer by layer, with linear CKA on the target's test split, against

* its own pre-trained encoder (``pre_vs_finetuned``: 1 - diagonal = how far each block moved), and
* the scratch-trained model of the same (architecture, target, budget, seed)
  (``finetuned_vs_scratch``), when that scratch cell kept a checkpoint too.

Each comparison is one store artifact of kind ``"cka"``, keyed by the content hash of the two
cell keys and the comparison kind, so a re-run skips it. The work runs in the driver process: a
few hundred forward passes per comparison cost far less than the fine-tuning that produced them.

The estimator is the textbook (biased) linear CKA of Kornblith et al. (2019) on up to
``max_examples`` test examples, evenly spaced over the split (so a class-ordered split still
contributes every class), computed in one batch by default. It lies in [0, 1] by construction.
Smaller batches bound memory for large inputs; the matrix is then the ratio of per-batch HSIC
sums, still in [0, 1] but batch-size dependent (``debiased=True`` removes that dependence).
Both models read the batches that model A's ``prepare`` produces (same architecture, same input
pipeline for the sources atlbench builds).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atlbench.cache import atomic_write_text, content_hash
from atlbench.errors import AtlbenchError
from atlbench.plan import BASELINE, TRANSFER, Cell, Plan
from atlbench.similarity import CKAResult, auto_layers, cka_matrix
from atlbench.sources.base import Encoder, Source
from atlbench.sources.checkpoint import load_state_dict
from atlbench.study import Study, load_study
from atlbench.targets.base import Split, TaskData

log = logging.getLogger(__name__)

MAX_EXAMPLES = 500  # test examples per comparison: enough for stable CKA, cheap on a CPU
STUDY_VERSION = 1  # bump when the estimator or data selection changes (new artifact keys)
PRE_VS_FT = "pre_vs_finetuned"
FT_VS_SCRATCH = "finetuned_vs_scratch"


@dataclass
class LayerStudyResult:
    """What :func:`run_layer_study` did, for the sweep summary and tests."""

    computed: list[str] = field(default_factory=list)  # artifact keys written now
    existing: int = 0  # comparisons already in the store (resume)
    skipped: list[str] = field(default_factory=list)  # one human-readable reason each


# --------------------------------------------------------------------------------------------
# building blocks shared by the sweep hook and the CLI
# --------------------------------------------------------------------------------------------


def backbone(encoder: Encoder) -> nn.Module:
    """The wrapped timm / Hugging Face network: its own module names, its own call convention.

    Hugging Face models take tokenizer output as keyword arguments, which :func:`cka_matrix`
    passes; the :class:`Encoder` wrapper takes one positional batch instead.
    """
    inner = getattr(encoder, "model", None)
    return inner if isinstance(inner, nn.Module) else encoder


def load_encoder_checkpoint(encoder: Encoder, path: str | Path) -> Encoder:
    """Load a fine-tuned encoder's state dict (as the tuning protocol saves it), strictly.

    A partial load would compare a half-fine-tuned model and report it as fine-tuned, so a key
    mismatch (e.g. a checkpoint of another architecture) is an error, not a warning.
    """
    state = load_state_dict(path)
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        first = (missing or extra)[0]
        raise AtlbenchError(
            f"checkpoint {str(path)!r} does not match {type(encoder).__name__}: "
            f"{len(missing)} missing and {len(extra)} unexpected weights (first: {first!r})"
        )
    encoder.load_state_dict(state, strict=True)
    return encoder


def spaced_indices(n: int, max_examples: int | None) -> np.ndarray:
    """At most ``max_examples`` indices spread evenly over ``range(n)`` (all when it fits)."""
    if max_examples is None or n <= max_examples:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_examples).round().astype(np.int64))


def batches(encoder: Encoder, split: Split, batch_size: int) -> list[Any]:
    """Model-ready batches of ``split`` in near-equal sizes (no tail of <= 3 examples)."""
    from atlbench.train import PreparedSplit

    prepared = PreparedSplit(encoder, split)
    n = len(prepared)
    parts = np.array_split(np.arange(n), max(1, -(-n // max(batch_size, 4))))
    return [prepared.batch(torch.as_tensor(p)) for p in parts if len(p)]


def compare(
    encoder_a: Encoder,
    encoder_b: Encoder,
    data: list[Any],
    device: torch.device,
    debiased: bool = False,
) -> CKAResult:
    """CKA matrix between the auto layers of two encoders' backbones over prepared batches."""
    a, b = backbone(encoder_a), backbone(encoder_b)
    a.to(device)
    b.to(device)
    return cka_matrix(
        a, b, data, layers_a=auto_layers(a), layers_b=auto_layers(b), debiased=debiased,
        device=device,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# the sweep hook
# --------------------------------------------------------------------------------------------


def _checkpoint_path(record: dict[str, Any], results_dir: Path) -> Path | None:
    """Where a cell's checkpoint is now: beside the store first (the results dir may have moved)."""
    recorded = record.get("extra_checkpoint")
    if not isinstance(recorded, str) or not recorded:
        return None
    beside = results_dir / "checkpoints" / str(record["key"]) / Path(recorded).name
    for path in (beside, Path(recorded)):
        if path.exists():
            return path
    return None


def _is_finetuned(study: Study, cell: Cell) -> bool:
    return cell.role == TRANSFER and study.strategy(cell.strategy).saves_checkpoint


def artifact_key(key_a: str, key_b: str, kind: str) -> str:
    """Content hash of the two compared models' identities and the comparison kind."""
    return content_hash({"a": key_a, "b": key_b, "kind": kind, "version": STUDY_VERSION}, 20)


def run_layer_study(
    store: Any,
    study: Study,
    plan: Plan,
    results_dir: Path,
    device: str | torch.device = "cpu",
    max_examples: int | None = MAX_EXAMPLES,
    batch_size: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> LayerStudyResult:
    """Compute and store every missing CKA comparison of the plan's finished fine-tuned cells.

    A comparison that fails (unreadable checkpoint, an architecture without auto layers) is
    logged and skipped: CKA is a view on the results and must not cost the sweep its report.
    """
    from atlbench.timing import resolve_device

    result = LayerStudyResult()
    if not study.suite.cka:
        return result
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    records = {r["key"]: r for r in store.records().to_dict("records")}
    done = {k for k, r in records.items() if r.get("status") == "done"}
    existing = {p.get("key") for p in store.artifacts("cka")}
    scratch = {
        (c.arch, c.target, c.budget, c.seed): c
        for c in plan.cells
        if c.key in done and c.role == BASELINE
    }
    models = _Models()
    for cell in plan.cells:
        if cell.key not in done or not _is_finetuned(study, cell):
            continue
        ft_path = _checkpoint_path(records[cell.key], results_dir)
        if ft_path is None:
            result.skipped.append(f"{cell.label}: no checkpoint kept")
            continue
        pairs: list[tuple[str, str, Any]] = [(PRE_VS_FT, f"pretrained:{cell.source_id}", None)]
        other = scratch.get((cell.arch, cell.target, cell.budget, cell.seed))
        if other is not None:
            pairs.append((FT_VS_SCRATCH, other.key, other))
        for kind, key_b, scratch_cell in pairs:
            if kind == PRE_VS_FT:  # the pre-trained weights are identified by the source
                key = artifact_key(content_hash(study.source(cell.source_id).fingerprint, 20),
                                   cell.key, kind)  # fmt: skip
            else:
                key = artifact_key(cell.key, key_b, kind)
            if key in existing:
                result.existing += 1
                continue
            if progress is not None:
                progress(f"CKA {kind}: {cell.label}")
            try:
                payload = _one_comparison(
                    study, cell, ft_path, kind, scratch_cell, records, results_dir,
                    models, dev, max_examples, batch_size,
                )  # fmt: skip
            except Exception as err:  # reported and skipped, never fatal
                reason = f"{cell.label} ({kind}): {type(err).__name__}: {err}".splitlines()[0]
                log.warning("CKA skipped: %s", reason)
                result.skipped.append(reason)
                continue
            if payload is None:
                result.skipped.append(f"{cell.label} ({kind}): scratch cell kept no checkpoint")
                continue
            store.put_artifact(key, "cka", payload | {"key": key})
            existing.add(key)
            result.computed.append(key)
    return result


class _Models:
    """The pre-trained encoder of each source, kept for every cell, and the current cell's
    fine-tuned one, which both of its comparisons share (one load from disk per cell)."""

    def __init__(self) -> None:
        self._pretrained: dict[str, Encoder] = {}
        self._finetuned: tuple[Path, Encoder] | None = None

    def pretrained(self, source_id: str, source: Source) -> Encoder:
        if source_id not in self._pretrained:
            self._pretrained[source_id] = source.build(True).eval()
        return self._pretrained[source_id]

    def finetuned(self, source_id: str, source: Source, path: Path) -> Encoder:
        if self._finetuned is None or self._finetuned[0] != path:
            self._finetuned = None  # drop the previous cell's model before loading the next
            pre = self.pretrained(source_id, source)
            self._finetuned = (path, load_encoder_checkpoint(copy.deepcopy(pre), path))
        return self._finetuned[1]


def _one_comparison(
    study: Study,
    cell: Cell,
    ft_path: Path,
    kind: str,
    scratch_cell: Any,
    records: dict[str, dict[str, Any]],
    results_dir: Path,
    models: _Models,
    device: torch.device,
    max_examples: int | None,
    batch_size: int | None,
) -> dict[str, Any] | None:
    source: Source = study.source(cell.source_id)
    pre = models.pretrained(cell.source_id, source)
    finetuned = models.finetuned(cell.source_id, source, ft_path)
    if kind == PRE_VS_FT:
        model_a, model_b, cell_b = pre, finetuned, None
    else:
        path = _checkpoint_path(records[scratch_cell.key], results_dir)
        if path is None:
            return None
        scratch_model = load_encoder_checkpoint(source.build(False), path)
        model_a, model_b, cell_b = finetuned, scratch_model, scratch_cell
    task = study.target(cell.target).load(cell.seed if study.suite.resample_splits else None)
    res, n_split = _compare_on_task(
        model_a, model_b, task, "test", device, max_examples, batch_size
    )
    return {
        "source": cell.source,
        "target": cell.target,
        "strategy": cell.strategy,
        "budget": cell.budget.label,
        "seed": cell.seed,
        "kind": kind,
        "rows": res.layers_a,
        "cols": res.layers_b,
        "matrix": res.matrix.tolist(),
        "arch": cell.arch,
        "cell_a": cell.key if kind == FT_VS_SCRATCH else None,
        "cell_b": cell_b.key if cell_b is not None else cell.key,
        "split": "test",
        "n_examples": res.n_examples,
        "n_split": n_split,
        "estimator": "linear CKA (biased HSIC)",
        "version": STUDY_VERSION,
    }


def _compare_on_task(
    model_a: Encoder,
    model_b: Encoder,
    task: TaskData,
    split_name: str,
    device: torch.device,
    max_examples: int | None,
    batch_size: int | None,
    debiased: bool = False,
) -> tuple[CKAResult, int]:
    split = task.split(split_name)
    idx = spaced_indices(len(split), max_examples)
    if len(idx) < 4:
        raise AtlbenchError(
            f"{task.id}/{split_name}: CKA needs at least 4 examples, got {len(idx)}"
        )
    data = batches(model_a, split.subset(idx), batch_size or len(idx))
    return compare(model_a, model_b, data, device, debiased), len(split)


# --------------------------------------------------------------------------------------------
# `atlbench cka`
# --------------------------------------------------------------------------------------------


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
    from atlbench.timing import resolve_device

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
    res, n_split = _compare_on_task(
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
