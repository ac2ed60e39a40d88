"""Layer study: which blocks did fine-tuning change, and how close is transfer to scratch training?

With ``cka: true`` the plan holds, for every fine-tuned cell (a pre-trained, trainable strategy that
keeps its checkpoint), a CKA task (:class:`~atlbench.plan.CkaTask`) comparing it layer by layer,
with linear CKA on the target's test split, against

* its own pre-trained encoder (``pre_vs_finetuned``: 1 - diagonal = how far each block moved), and
* the scratch-trained model of the same (architecture, target, budget, seed)
  (``finetuned_vs_scratch``), when the plan has that scratch cell.

A task runs on the sweep's executor once the cells it compares are done (:func:`attach_checkpoints`
hands it their checkpoints); it returns one :class:`~atlbench.artifacts.CkaArtifact`, stored by the
driver under a content hash of the two compared models and the comparison kind, so a re-run skips
it.

The estimator is the textbook (biased) linear CKA of Kornblith et al. (2019) on up to
``max_examples`` test examples, evenly spaced over the split (so a class-ordered split still
contributes every class), computed in one batch by default. It lies in [0, 1] by construction.
Smaller batches bound memory for large inputs; the matrix is then the ratio of per-batch HSIC
sums, still in [0, 1] but batch-size dependent (``debiased=True`` removes that dependence).
Both models read the batches that model A's ``prepare`` produces (same architecture, same input
pipeline for the sources atlbench builds). ``atlbench cka`` (:mod:`atlbench.commands._cka`) runs the
same comparison on any two models.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atlbench.artifacts import CKA_VERSION, CkaArtifact, TaskSkipped
from atlbench.errors import AtlbenchError
from atlbench.plan import FT_VS_SCRATCH, PRE_VS_FT, CkaTask
from atlbench.similarity import CKAResult, auto_layers, cka_matrix
from atlbench.sources._base import Encoder, Source
from atlbench.sources.checkpoint import load_state_dict
from atlbench.study import Study
from atlbench.targets._base import Split, TaskData

__all__ = [
    "FT_VS_SCRATCH",
    "MAX_EXAMPLES",
    "PRE_VS_FT",
    "CkaModels",
    "attach_checkpoints",
    "compare",
    "compare_on_task",
    "compute_cka",
    "load_encoder_checkpoint",
]

MAX_EXAMPLES = 500  # test examples per comparison: enough for stable CKA, cheap on a CPU


# --------------------------------------------------------------------------------------------
# building blocks shared by the sweep's tasks and the CLI
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


def compare_on_task(
    model_a: Encoder,
    model_b: Encoder,
    task: TaskData,
    split_name: str,
    device: torch.device,
    max_examples: int | None,
    batch_size: int | None,
    debiased: bool = False,
) -> tuple[CKAResult, int]:
    """CKA of two models over up to ``max_examples`` evenly spaced examples of a split, and the
    split's size."""
    split = task.split(split_name)
    idx = spaced_indices(len(split), max_examples)
    if len(idx) < 4:
        raise AtlbenchError(
            f"{task.id}/{split_name}: CKA needs at least 4 examples, got {len(idx)}"
        )
    data = batches(model_a, split.subset(idx), batch_size or len(idx))
    return compare(model_a, model_b, data, device, debiased), len(split)


# --------------------------------------------------------------------------------------------
# the sweep's CKA tasks
# --------------------------------------------------------------------------------------------


def _checkpoint_path(record: dict[str, Any], results_dir: Path) -> Path | None:
    """Where a cell's checkpoint is now: beside the store first (the results dir may have moved)."""
    recorded = record.get("checkpoint")
    if not isinstance(recorded, str) or not recorded:
        return None
    beside = results_dir / "checkpoints" / str(record["key"]) / Path(recorded).name
    for path in (beside, Path(recorded)):
        if path.exists():
            return path
    return None


def attach_checkpoints(
    task: CkaTask, records: Mapping[str, Mapping[str, Any]], results_dir: Path
) -> CkaTask | TaskSkipped:
    """The task with the checkpoint of every cell it needs (in ``needs`` order), or why it cannot
    run. The driver calls this once those cells are done."""
    paths = []
    for key in task.needs:
        record = records.get(key)
        path = _checkpoint_path(dict(record), results_dir) if record is not None else None
        if path is None:
            what = (
                "no checkpoint kept" if key == task.cell.key else "scratch cell kept no checkpoint"
            )
            return TaskSkipped(f"{task.label}: {what}")
        paths.append(str(path))
    return replace(task, checkpoints=tuple(paths))


class CkaModels:
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


def compute_cka(
    study: Study,
    task: CkaTask,
    models: CkaModels,
    device: torch.device,
    max_examples: int | None = MAX_EXAMPLES,
    batch_size: int | None = None,
) -> CkaArtifact:
    """One comparison of a task whose checkpoints are attached; raises when it cannot be made."""
    cell = task.cell
    source: Source = study.source(cell.source_id)
    pre = models.pretrained(cell.source_id, source)
    finetuned = models.finetuned(cell.source_id, source, Path(task.checkpoints[0]))
    if task.kind == PRE_VS_FT:
        model_a, model_b, cell_b = pre, finetuned, cell
    else:
        assert task.scratch is not None  # the plan pairs every finetuned_vs_scratch task
        scratch_model = load_encoder_checkpoint(source.build(False), Path(task.checkpoints[1]))
        model_a, model_b, cell_b = finetuned, scratch_model, task.scratch
    data = study.target(cell.target).load(cell.seed if study.suite.resample_splits else None)
    res, n_split = compare_on_task(model_a, model_b, data, "test", device, max_examples, batch_size)
    return CkaArtifact(
        key=task.key,
        source=cell.source,
        target=cell.target,
        strategy=cell.strategy,
        budget=cell.budget.label,
        seed=cell.seed,
        kind=task.kind,
        rows=res.layers_a,
        cols=res.layers_b,
        matrix=res.matrix.tolist(),
        arch=cell.arch,
        cell_a=cell.key if task.kind == FT_VS_SCRATCH else None,
        cell_b=cell_b.key,
        split="test",
        n_examples=res.n_examples,
        n_split=n_split,
        estimator="linear CKA (biased HSIC)",
        version=CKA_VERSION,
    )
