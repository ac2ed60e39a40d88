"""The strategy contract: a cell context in, predictions on the test split and a clock out.

Strategies select hyperparameters on the validation split only; the test split is predicted once,
with the selected model, and scored by the executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from atlbench.sources.base import Encoder, Source
from atlbench.suite import BudgetSpec, TrainingConfig
from atlbench.targets.base import TaskData


class StrategyParams(BaseModel):
    """Base for per-strategy suite parameters; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class CellContext:
    """Everything a strategy may use for one cell; built by the executor."""

    source: Source
    task: TaskData
    train_idx: np.ndarray
    seed: int
    device: torch.device
    training: TrainingConfig
    params: Any
    features: Callable[[str], np.ndarray]
    build_encoder: Callable[[bool], Encoder]
    progress: Callable[[str], None] = lambda message: None
    budget: BudgetSpec | None = None  # the label budget ``train_idx`` was drawn with
    checkpoint_dir: Path | None = None
    # other suite targets this cell trains on too (multi-task), by id, in the strategy's order
    related: dict[str, TaskData] = field(default_factory=dict)

    @property
    def train_labels(self) -> np.ndarray:
        return self.task.train.labels[self.train_idx]


@dataclass
class CellOutcome:
    """What a strategy returns; the executor adds metrics, provenance and the key."""

    test_pred: np.ndarray
    val_acc: float
    hparams: dict[str, Any]
    grid: list[dict[str, Any]]
    timing: dict[str, float]
    trainable_params: int
    total_params: int
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy:
    """An adaptation strategy. Subclasses set ``name``/``Params`` and implement :meth:`run`."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    pretrained: ClassVar[bool] = True  # scratch sets False: its key ignores the source weights
    uses_features: ClassVar[bool] = False  # frozen-feature strategies read the feature cache
    version: ClassVar[int] = 1  # bump when results would change, so old cells are not reused

    @classmethod
    def target_group(cls, params: Any) -> tuple[str, ...]:
        """Suite targets trained jointly by this strategy; empty: every target on its own.

        With a group, the strategy runs only on the group's targets, and a cell on one of them
        also trains on (and has in its key) every other member.
        """
        return ()

    def run(self, ctx: CellContext) -> CellOutcome:
        raise NotImplementedError


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
