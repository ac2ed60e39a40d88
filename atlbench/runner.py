"""Running one cell (or one estimator pair) from its description; returns records, writes nothing.

This is what every executor calls, in-process or on a remote worker. Only the driver writes the
store, so a worker's crash can lose at most the cell in flight.
"""

from __future__ import annotations

import contextlib
import platform
import time
import traceback
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from atlbench import __version__
from atlbench.budgets import select_budget
from atlbench.features import FeatureCache
from atlbench.plan import Cell, EstimateTask
from atlbench.sources import Encoder, Source, resolve_source
from atlbench.strategies import STRATEGIES, CellContext, strategy_params
from atlbench.suite import Suite
from atlbench.targets import load_target
from atlbench.timing import device_label

Progress = Callable[[str], None]


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

    def build(self, source: Source, pretrained: bool) -> Encoder:
        if not pretrained:
            return source.build(False)
        key = repr(source.fingerprint)
        if key != self._key or self._encoder is None or self._state is None:
            self._encoder = source.build(True)
            self._state = {k: v.clone() for k, v in self._encoder.state_dict().items()}
            self._key = key
        else:
            self._encoder.load_state_dict(self._state)
        return self._encoder


class Worker:
    """Per-process caches (features, encoders) shared by the cells this process runs."""

    def __init__(self, suite: Suite, device: torch.device) -> None:
        self.suite = suite
        self.device = device
        self.features = FeatureCache(device)
        self.encoders = EncoderCache()
        self.sources: dict[str, Source] = {}

    def source(self, source_id: str) -> Source:
        if source_id not in self.sources:
            self.sources[source_id] = resolve_source(
                self.suite.source(source_id), self.suite.trust_remote_code
            )
        return self.sources[source_id]

    def run_cell(
        self, cell: Cell, progress: Progress = lambda m: None, checkpoint_root: Any = None
    ) -> tuple[dict[str, Any], list[int] | None]:
        """Run a cell; failures become a record with the error and traceback."""
        started = time.perf_counter()
        base = cell_identity(cell) | {
            "suite": self.suite.name,
            "device": device_label(self.device),
            "dtype": "bfloat16" if self.device.type == "cuda" else "float32",
            "versions": package_versions(),
            "created_at": time.time(),
        }
        try:
            record, preds = self._run(cell, progress, checkpoint_root)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            record = base | {
                "status": "failed",
                "error": f"{type(err).__name__}: {err}".splitlines()[0][:500],
                "traceback": traceback.format_exc(limit=20),
                "wall_time_s": time.perf_counter() - started,
            }
            return record, None
        return base | record | {
            "status": "done",
            "wall_time_s": time.perf_counter() - started,
        }, preds

    def _run(
        self, cell: Cell, progress: Progress, checkpoint_root: Any
    ) -> tuple[dict[str, Any], list[int]]:
        from sklearn.metrics import f1_score

        source = self.source(cell.source_id)
        task = load_target(self.suite.target(cell.target))
        strategy_entry = next(s for s in self.suite.strategies if s.label == cell.strategy)
        strategy = STRATEGIES.get(cell.strategy_name)()
        train_idx = select_budget(task.train.labels, cell.budget, cell.seed, f"{cell.target}: ")
        params = strategy_params(strategy_entry)
        related = {
            tid: load_target(self.suite.target(tid))
            for tid in type(strategy).target_group(params)
            if tid != cell.target
        }
        feature_seconds = 0.0

        def features(split: str) -> np.ndarray:
            nonlocal feature_seconds
            fs = self.features.get(source, task, split)
            feature_seconds += fs.seconds
            return fs.features

        checkpoint_dir = None
        if checkpoint_root is not None and self.suite.training.keep_checkpoints:
            checkpoint_dir = checkpoint_root / cell.key
        torch.manual_seed(cell.seed)
        ctx = CellContext(
            source=source,
            task=task,
            train_idx=train_idx,
            seed=cell.seed,
            device=self.device,
            training=self.suite.training,
            params=params,
            features=features,
            build_encoder=lambda pretrained: self.encoders.build(source, pretrained),
            progress=progress,
            budget=cell.budget,
            checkpoint_dir=checkpoint_dir,
            related=related,
        )
        outcome = strategy.run(ctx)
        y_true = task.test.labels
        pred = np.asarray(outcome.test_pred, dtype=np.int64)
        record = {
            "n_train": len(train_idx),
            "n_test": len(y_true),
            "num_classes": task.num_classes,
            "test_acc": float((pred == y_true).mean()),
            "test_macro_f1": float(
                f1_score(
                    y_true,
                    pred,
                    average="macro",
                    labels=np.arange(task.num_classes),
                    zero_division=0,
                )
            ),
            "val_acc": outcome.val_acc,
            "trainable_params": outcome.trainable_params,
            "total_params": outcome.total_params,
            "hparams": outcome.hparams,
            "grid": outcome.grid,
            "feature_time_s": feature_seconds,
            **outcome.timing,
            **{f"extra_{k}": v for k, v in outcome.extra.items()},
        }
        return record, pred.tolist()

    def run_estimates(self, task_: EstimateTask) -> list[dict[str, Any]]:
        """Every estimator of a (source, target) pair on the cached train features."""
        from atlbench.estimators import ESTIMATORS

        source = self.source(task_.source)
        task = load_target(self.suite.target(task_.target))
        rows = []
        try:
            fs = self.features.get(source, task, "train")
        except Exception as err:
            return [
                _estimate_row(task_, name, status="failed", error=f"{type(err).__name__}: {err}")
                for name in task_.estimators
            ]
        for name in task_.estimators:
            spec = ESTIMATORS[name]
            data = fs.features if spec.input == "features" else fs.probs
            if data is None:
                rows.append(
                    _estimate_row(
                        task_, name, status="skipped", error="source has no classifier head"
                    )
                )
                continue
            t0 = time.perf_counter()
            try:
                score = float(spec.fn(data, task.train.labels))
            except Exception as err:
                rows.append(
                    _estimate_row(
                        task_, name, status="failed", error=f"{type(err).__name__}: {err}"
                    )
                )
                continue
            rows.append(
                _estimate_row(
                    task_,
                    name,
                    status="done",
                    score=score,
                    time_s=time.perf_counter() - t0,
                    extra={"feature_time_s": fs.seconds, "n": len(data), "dim": data.shape[1]},
                )
            )
        return rows + self._baselines(task_, source)

    def _baselines(self, task_: EstimateTask, source: Source) -> list[dict[str, Any]]:
        """Dataset-agnostic baselines: published comparisons find they beat most estimators."""
        try:
            encoder = self.encoders.build(source, True)
        except Exception as err:  # like every estimator, a failure is a row, never a crash
            return [
                _estimate_row(
                    task_, "baseline_params", status="failed", error=f"{type(err).__name__}: {err}"
                )
            ]
        rows = [
            _estimate_row(
                task_,
                "baseline_params",
                status="done",
                time_s=0.0,
                score=float(sum(p.numel() for p in encoder.parameters())),
            )
        ]
        if source.reported_accuracy is not None:
            rows.append(
                _estimate_row(
                    task_,
                    "baseline_reported_acc",
                    status="done",
                    time_s=0.0,
                    score=float(source.reported_accuracy),
                )
            )
        return rows


def _estimate_row(task: EstimateTask, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "key": task.key,
        "estimator": name,
        "source": task.source,
        "target": task.target,
    } | fields


def cell_identity(cell: Cell) -> dict[str, Any]:
    """The labels a record carries (the store re-labels them from the current plan)."""
    return {
        "key": cell.key,
        "source": cell.source,
        "source_id": cell.source_id,
        "target": cell.target,
        "strategy": cell.strategy,
        "strategy_name": cell.strategy_name,
        "budget": cell.budget.label,
        "budget_kind": cell.budget.kind,
        "budget_value": cell.budget.value,
        "seed": cell.seed,
        "arch": cell.arch,
    }
