"""Running one cell (or one estimator task) from its description; returns records, writes nothing.

This is what every executor calls, in-process or on a remote worker. Only the driver writes the
store, so a worker's crash can lose at most the cell in flight. The runner is also where labels
are guarded: a strategy gets a copy of the task with every label it may not read hidden, and the
runner alone scores the test predictions.
"""

from __future__ import annotations

import contextlib
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from atlbench._cache import content_hash
from atlbench._features import FeatureCache
from atlbench._heap import bound_heap, trim
from atlbench._source_task import source_accuracy, source_task
from atlbench._threads import cpu_threads
from atlbench._timing import device_label
from atlbench.artifacts import Artifact, TaskSkipped
from atlbench.budgets import holdout_split, select_budget, stratified_folds
from atlbench.plan import ArtifactTask, Cell, CkaTask, DomainGapTask, EstimateTask, Task
from atlbench.protocol import TrainingConfig
from atlbench.record import (
    Artifacts,
    CellRecord,
    Cost,
    Identity,
    Metrics,
    Provenance,
    SelectionSummary,
    Status,
)
from atlbench.registry import ESTIMATORS
from atlbench.sources._base import Encoder, Source
from atlbench.strategies._base import CellContext, Selection, StrategySpec
from atlbench.study import Study
from atlbench.targets._base import TaskData
from atlbench.version import __version__

if TYPE_CHECKING:
    from atlbench._layer_study import CkaModels

Progress = Callable[[str], None]
CellResult = tuple[CellRecord, dict[str, list[int]] | None]  # the record, test predictions
# what Worker.run_task returns, by task type: a cell's result, estimator rows, or an artifact
TaskResult = CellResult | list[dict[str, Any]] | Artifact | TaskSkipped


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "atlbench": __version__}
    for name in ("torch", "timm", "transformers", "scikit-learn", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


class EncoderCache:
    """Keeps the last pre-trained encoder's weights so consecutive cells skip reloading."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._state: dict[str, torch.Tensor] | None = None
        self._encoder: Encoder | None = None
        self.builds = 0  # how often a pre-trained encoder had to be built (cache misses)

    def build(self, source: Source, pretrained: bool) -> Encoder:
        if not pretrained:
            return source.build(False)
        key = repr(source.fingerprint)
        if key != self._key or self._encoder is None or self._state is None:
            self._encoder = None
            self._encoder = source.build(True)
            self._state = {k: v.clone() for k, v in self._encoder.state_dict().items()}
            self._key = key
            self.builds += 1
        else:
            self._encoder.load_state_dict(self._state)
        return self._encoder


def make_selection(
    labels: np.ndarray, budget_idx: np.ndarray, budgeted: bool, cfg: TrainingConfig,
    seed: int, trainable: bool,
) -> Selection:  # fmt: skip
    """How a cell selects: a hold-out (trainable) or k folds (frozen) inside the budget, or the
    target's validation split (``validation: full``)."""
    empty = np.zeros(0, dtype=np.int64)
    if not budgeted:
        return Selection(False, budget_idx, empty, retrain=False)
    y = labels[budget_idx]
    if trainable:
        fit_pos, val_pos = holdout_split(y, cfg.holdout, seed)
        return Selection(True, budget_idx[fit_pos], budget_idx[val_pos], retrain=cfg.retrain)
    folds = stratified_folds(y, cfg.cv_folds, seed)
    return Selection(True, budget_idx, empty, folds=tuple(folds))


def selection_summary(sel: Selection, n_budget: int, validation: str) -> SelectionSummary:
    """How many labels fitted and how many validated (the leaderboard shows both)."""
    if not sel.budgeted:
        method, n_fit, n_val = "validation split", n_budget, 0
    elif sel.folds:
        method, n_fit, n_val = f"{len(sel.folds)}-fold CV", n_budget, n_budget
    else:
        method, n_fit, n_val = "hold-out", len(sel.fit_idx), len(sel.val_idx)
    return SelectionSummary(
        validation=validation, selection=method, n_train=n_budget, n_fit=n_fit, n_val=n_val
    )


class Worker:
    """Per-process caches (features, encoders) shared by the cells this process runs."""

    def __init__(self, study: Study, device: torch.device) -> None:
        bound_heap()  # opt-in (ATLBENCH_MMAP_THRESHOLD); every executor runs its cells in a Worker
        self.study = study
        self.device = device
        self.features = FeatureCache(device)
        self.encoders = EncoderCache()
        self._before: dict[str, float | None] = {}  # source-task accuracy of each source
        self._cka_models: CkaModels | None = None  # encoders the CKA tasks of this process share

    def forgetting(self, cell: Cell, spec: StrategySpec, encoder: Encoder | None) -> dict[str, Any]:
        """Source-task accuracy of the source's own head before and after the cell's training
        (Li & Hoiem 2017; Kumar et al. 2022 use the same measure). A frozen strategy leaves the
        encoder unchanged, so its drop is exactly 0; without a known source task, nothing."""
        source = self.study.source(cell.source_id)
        if not cell.pretrained:
            return {}
        task = source_task(self.study, source)
        if task is None:
            return {}
        if spec.trains_encoder and encoder is not None:
            after = source_accuracy(encoder, task, self.device)
        else:
            after = None
        key = repr(source.fingerprint)
        if key not in self._before:
            self._before[key] = source_accuracy(
                self.encoders.build(source, True), task, self.device
            )
        before = self._before[key]
        if before is None:
            return {}
        if after is None:
            after = before  # the encoder did not change
        return {
            "source_acc_before": before,
            "source_acc_after": after,
            "forgetting": before - after,
        }

    def task(self, target_id: str, seed: int) -> TaskData:
        split_seed = seed if self.study.suite.resample_splits else None
        return self.study.target(target_id).load(split_seed)

    def run_cell(
        self, cell: Cell, progress: Progress = lambda m: None, checkpoint_root: Any = None
    ) -> CellResult:
        """Run a cell; failures become a record with the error and traceback.

        Besides the record it returns the test predictions with the true labels
        (``{"pred": [...], "true": [...]}``): per-example correctness is what lets intervals cover
        the test set, and what paired comparisons pair.
        """
        started = time.perf_counter()
        provenance = Provenance(
            suite=self.study.name,
            device=device_label(self.device),
            dtype="bfloat16" if self.device.type == "cuda" else "float32",
            versions=package_versions(),
            created_at=time.time(),
        )
        try:
            record, preds = self._run(cell, progress, checkpoint_root, provenance)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            failed = CellRecord(
                identity=cell_labels(cell),
                status=Status.FAILED,
                cost=Cost(wall_time_s=time.perf_counter() - started),
                provenance=provenance,
                error=f"{type(err).__name__}: {err}".splitlines()[0][:500],
                traceback=traceback.format_exc(limit=20),
            )
            return failed, None
        trim()  # the cell's trials are freed: hand their pages back before the next cell
        wall = replace(record.cost, wall_time_s=time.perf_counter() - started)
        return replace(record, cost=wall), preds

    def _context(
        self,
        cell: Cell,
        spec: StrategySpec,
        task: TaskData,
        progress: Progress,
        checkpoint_root: Any,
    ) -> tuple[CellContext[Any], list[float]]:
        source = self.study.source(cell.source_id)
        budget_idx = select_budget(task.train.labels, cell.budget, cell.seed, f"{cell.target}: ")
        selection = make_selection(
            task.train.labels, budget_idx, self.study.budgeted, spec.training, cell.seed,
            spec.trainable,
        )  # fmt: skip
        masked = task.masked(budget_idx, keep_val_labels=not self.study.budgeted)
        feature_seconds: list[float] = []
        init_seed = None if cell.pretrained else cell.seed

        def features(split: str) -> np.ndarray:
            fs = self.features.get(source, masked, split, init_seed=init_seed)
            feature_seconds.append(fs.seconds)
            return fs.features

        checkpoint_dir = None
        # cka: true implies kept checkpoints (the layer study reads them); keys are unchanged
        keep = spec.training.keep_checkpoints or self.study.suite.cka
        if checkpoint_root is not None and keep and spec.saves_checkpoint:
            checkpoint_dir = checkpoint_root / cell.key
        related = {tid: self.task(tid, cell.seed) for tid in spec.group if tid != cell.target}
        ctx = CellContext(
            source=source, task=masked, budget_idx=budget_idx, selection=selection,
            seed=cell.seed, device=self.device, training=spec.training, search=spec.search,
            params=spec.params, pretrained=cell.pretrained, features=features,
            build_encoder=lambda pretrained: self.encoders.build(source, pretrained),
            progress=progress, budget=cell.budget, checkpoint_dir=checkpoint_dir, related=related,
        )  # fmt: skip
        return ctx, feature_seconds

    def _run(
        self, cell: Cell, progress: Progress, checkpoint_root: Any, provenance: Provenance
    ) -> tuple[CellRecord, dict[str, list[int]]]:
        from sklearn.metrics import f1_score

        spec = self.study.strategy(cell.strategy)
        task = self.task(cell.target, cell.seed)
        ctx, feature_seconds = self._context(cell, spec, task, progress, checkpoint_root)
        torch.manual_seed(cell.seed)
        t0 = time.perf_counter()
        outcome = spec.make().run(ctx)
        strategy_seconds = time.perf_counter() - t0
        forgetting = self.forgetting(cell, spec, outcome.encoder)
        outcome.encoder = None
        y_true = task.test.labels
        pred = np.asarray(outcome.test_pred, dtype=np.int64)
        f1 = f1_score(
            y_true, pred, average="macro", labels=np.arange(task.num_classes), zero_division=0
        )
        # features are charged at their original extraction cost, cached or not, so a cell's
        # cost does not depend on cache history
        feature_time = float(sum(feature_seconds))
        tuning = outcome.tuning
        if tuning.n_trials is None:  # a plug-in strategy that does not say: as the engine counts
            tuning = replace(tuning, n_trials=len(outcome.trials) if spec.trainable else 0)
        if tuning.edge_flags is None:
            tuning = replace(tuning, edge_flags=[])
        record = CellRecord(
            identity=replace(cell_labels(cell), trains_encoder=spec.trains_encoder),
            status=Status.DONE,
            metrics=Metrics(
                test_acc=float((pred == y_true).mean()),
                test_macro_f1=float(f1),
                val_acc=outcome.val_acc,
                n_test=len(y_true),
                num_classes=task.num_classes,
            ),
            selection=selection_summary(
                ctx.selection, len(ctx.budget_idx), self.study.suite.validation
            ),
            cost=replace(
                outcome.cost,
                feature_time_s=feature_time,
                cost_s=strategy_seconds + feature_time,
                trainable_params=outcome.trainable_params,
                total_params=outcome.total_params,
            ),
            tuning=tuning,
            diagnostics=replace(outcome.diagnostics, **forgetting),
            artifacts=Artifacts(checkpoint=outcome.checkpoint),
            provenance=provenance,
            strategy_facts=outcome.strategy_facts,
        )
        return record, {"pred": pred.tolist(), "true": y_true.astype(int).tolist()}

    # -- any task of the plan -------------------------------------------------------------------
    def run_task(
        self, task: Task, progress: Progress = lambda m: None, checkpoint_root: Any = None
    ) -> TaskResult:
        """Run any task of the plan: what every executor calls. Never raises for the task's own
        failure: a cell becomes a failed record, an artifact task a :class:`TaskSkipped`.

        On a CPU it runs with one thread (:mod:`atlbench._threads`): the same floats with any
        number of jobs or cores."""
        with cpu_threads(self.device):
            if isinstance(task, Cell):
                return self.run_cell(task, progress, checkpoint_root)
            if isinstance(task, EstimateTask):
                return self.run_estimates(task)
            return self.run_artifact(task)

    def run_artifact(self, task: ArtifactTask) -> Artifact | TaskSkipped:
        """A CKA comparison, domain gap or label mapping. These are views on the results: one
        that fails is skipped with its reason and never costs the sweep its report."""
        try:
            result = self._artifact(task)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            reason = f"{task.label}: {type(err).__name__}: {err}".splitlines()[0][:500]
            return TaskSkipped(reason, error=True)
        trim()
        return result

    def _artifact(self, task: ArtifactTask) -> Artifact | TaskSkipped:
        if isinstance(task, CkaTask):
            from atlbench import _layer_study as layer_study

            if self._cka_models is None:
                self._cka_models = layer_study.CkaModels()
            return layer_study.compute_cka(self.study, task, self._cka_models, self.device)
        if isinstance(task, DomainGapTask):
            from atlbench import _domain_gap as domain_gap

            return domain_gap.compute_gap(self.study, task, self.features)
        from atlbench import _label_mapping as label_mapping

        return label_mapping.compute_mapping(self.study, task, self.features)

    # -- estimators -----------------------------------------------------------------------------
    def run_estimates(self, task_: EstimateTask) -> list[dict[str, Any]]:
        """Every estimator of every source on the task's labelled subset of the target."""
        seed = task_.seed if task_.seed is not None else 0
        task = self.task(task_.target, seed)
        labels = task.train.labels
        idx = np.arange(len(labels))
        if task_.budget is not None:
            idx = select_budget(labels, task_.budget, seed, f"{task_.target}: ")
        rows: list[dict[str, Any]] = []
        features: dict[str, np.ndarray] = {}
        for source_id in task_.sources:
            source = self.study.source(source_id)
            source_rows, feats = self._source_estimates(task_, source, task, idx)
            rows += source_rows
            if feats is not None:
                features[source_id] = feats
        rows += self._set_estimates(task_, features, labels[idx])
        return rows

    def _source_estimates(
        self, task_: EstimateTask, source: Source, task: TaskData, idx: np.ndarray
    ) -> tuple[list[dict[str, Any]], np.ndarray | None]:
        row = _row_factory(task_, source)
        try:
            fs = self.features.get(source, task, "train")
        except Exception as err:
            names = [n for n in task_.estimators if not ESTIMATORS.get(n).set_level]
            return [
                row(n, status="failed", error=f"{type(err).__name__}: {err}") for n in names
            ], None
        y = task.train.labels[idx]
        rows = []
        for name in task_.estimators:
            spec = ESTIMATORS.get(name)
            if spec.set_level:
                continue
            data = fs.features if spec.input == "features" else fs.probs
            if data is None:
                rows.append(row(name, status="skipped", error="source has no classifier head"))
                continue
            t0 = time.perf_counter()
            try:
                score = float(spec.fn(data[idx], y))
            except Exception as err:
                rows.append(row(name, status="failed", error=f"{type(err).__name__}: {err}"))
                continue
            extra = {"feature_time_s": fs.seconds, "n": len(idx), "dim": data.shape[1]}
            rows.append(
                row(name, status="done", score=score, time_s=time.perf_counter() - t0, extra=extra)
            )
        return rows + self._baselines(row, source), fs.features[idx]

    def _set_estimates(
        self, task_: EstimateTask, features: dict[str, np.ndarray], labels: np.ndarray
    ) -> list[dict[str, Any]]:
        """Estimators normalised over the candidate set: one call scores every source."""
        rows = []
        ids = list(features)
        for name in task_.estimators:
            spec = ESTIMATORS.get(name)
            if not spec.set_level or not ids:
                continue
            t0 = time.perf_counter()
            try:
                scores = list(spec.fn([features[i] for i in ids], labels))
                status, error = "done", None
            except Exception as err:
                scores, status, error = [None] * len(ids), "failed", f"{type(err).__name__}: {err}"
            seconds = (time.perf_counter() - t0) / len(ids)
            for source_id, score in zip(ids, scores, strict=True):
                row = _row_factory(task_, self.study.source(source_id))
                extra = {"set_level": True, "candidates": len(ids)}
                value = None if score is None else float(score)
                rows.append(
                    row(name, status=status, score=value, time_s=seconds, error=error, extra=extra)
                )
        return rows

    def _baselines(
        self, row: Callable[..., dict[str, Any]], source: Source
    ) -> list[dict[str, Any]]:
        """Dataset-agnostic baselines: published comparisons find they beat most estimators."""
        try:
            encoder = self.encoders.build(source, True)
        except Exception as err:  # like every estimator, a failure is a row, never a crash
            return [row("baseline_params", status="failed", error=f"{type(err).__name__}: {err}")]
        rows = [
            row("baseline_params", status="done", time_s=0.0, score=float(backbone_params(encoder)))
        ]
        if source.reported_accuracy is not None:
            rows.append(
                row(
                    "baseline_reported_acc",
                    status="done",
                    time_s=0.0,
                    score=float(source.reported_accuracy),
                )
            )
        return rows


def backbone_params(encoder: Encoder) -> int:
    """Parameters of the backbone alone: the source's own classifier head is not counted, so
    the same backbone scores the same whatever its pre-training task's class count."""
    head = encoder.source_head()
    skip = {id(p) for p in head.parameters()} if head is not None else set()
    return sum(p.numel() for p in encoder.parameters() if id(p) not in skip)


def _row_factory(task: EstimateTask, source: Source) -> Callable[..., dict[str, Any]]:
    def row(name: str, **fields: Any) -> dict[str, Any]:
        return {
            "key": task.key,
            "estimator": name,
            "source": source.id,
            "source_key": content_hash(source.fingerprint),
            "target": task.target,
            "budget": task.budget.label if task.budget is not None else "all",
            "seed": task.seed,
        } | fields

    return row


def cell_labels(cell: Cell) -> Identity:
    """A cell's identity group: the labels its record carries."""
    return Identity(**cell_identity(cell))


def cell_identity(cell: Cell) -> dict[str, Any]:
    """The labels a record carries, as the plan table stores them (the store re-labels records
    from the current plan)."""
    return {
        "key": cell.key,
        "source": cell.source,
        "source_id": cell.source_id,
        "target": cell.target,
        "strategy": cell.strategy,
        "strategy_name": cell.strategy_name,
        "role": cell.role,
        "budget": cell.budget.label,
        "budget_kind": cell.budget.kind,
        "budget_value": cell.budget.value,
        "seed": cell.seed,
        "arch": cell.arch,
    }
