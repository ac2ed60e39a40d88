"""The strategy contract: a cell context in, test predictions and a clock out.

A strategy never sees a label it may not use: the runner hands it a copy of the task whose test
labels, and train labels outside the label budget, are hidden (and, under budgeted validation,
the validation split's labels too). Selection uses :attr:`CellContext.selection`; the test split
is predicted once, with the selected model, and scored by the runner.

What a strategy *is* (the baseline, a frozen-feature method, a trainer of the encoder) is declared
here as capabilities, never inferred from its name or its suite id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from atlbench.budgets import BudgetSpec
from atlbench.protocol import Dimension, TrainingConfig, describe_space
from atlbench.record import Cost, Diagnostics, Tuning
from atlbench.sources._base import Encoder, Source
from atlbench.targets._base import Split, TaskData


class StrategyParams(BaseModel):
    """Base for per-strategy suite parameters; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A strategy's own params model: in ``Strategy[ParamsT]`` the context's ``params`` is a ``ParamsT``,
# so a strategy reads its knobs typed, with no cast, and mypy checks ``Params`` against it.
ParamsT = TypeVar("ParamsT", bound=StrategyParams)


@dataclass(frozen=True)
class Selection:
    """Which labelled examples select hyperparameters, and how.

    ``budgeted`` (the default protocol): a trainable strategy fits on ``fit_idx`` and validates on
    ``val_idx`` (both inside the budget, train-split indices), then retrains on the whole budget;
    a frozen strategy cross-validates over ``folds`` (positions within the budget). ``full``: the
    whole budget fits and the target's own validation split selects (an optimistic opt-in).
    """

    budgeted: bool
    fit_idx: np.ndarray
    val_idx: np.ndarray
    folds: tuple[np.ndarray, ...] = ()
    retrain: bool = True


@dataclass
class CellContext(Generic[ParamsT]):
    """Everything a strategy may use for one cell; built by the runner. ``params`` is the
    strategy's validated params model."""

    source: Source
    task: TaskData  # labels the strategy may not read are -1 (see TaskData.masked)
    budget_idx: np.ndarray  # the labelled train indices (the label budget)
    selection: Selection
    seed: int
    device: torch.device
    training: TrainingConfig
    search: dict[str, Dimension]
    params: ParamsT
    pretrained: bool  # False: the random-init twin of the source's architecture
    features: Callable[[str], np.ndarray]
    build_encoder: Callable[[bool], Encoder]
    progress: Callable[[str], None] = lambda message: None
    budget: BudgetSpec | None = None
    checkpoint_dir: Path | None = None
    # other suite targets this cell trains on too (multi-task), by id, in the strategy's order
    related: dict[str, TaskData] = field(default_factory=dict)

    def labels(self, idx: np.ndarray) -> np.ndarray:
        """Train-split labels at ``idx``; only budget indices are readable."""
        out = self.task.train.labels[idx]
        assert (out >= 0).all(), "a strategy asked for a label outside its budget"
        return out

    def labelled(self, idx: np.ndarray) -> Split:
        return Split(_take(self.task.train.inputs, idx), self.labels(idx))

    def fit_split(self) -> Split:
        """What a trainable strategy fits on while it selects hyperparameters."""
        return self.labelled(self.selection.fit_idx)

    def val_split(self) -> Split:
        """What selects: a hold-out of the budget, or (``validation: full``) the val split."""
        if self.selection.budgeted:
            return self.labelled(self.selection.val_idx)
        return self.task.val

    def val_features(self) -> tuple[np.ndarray, np.ndarray]:
        if self.selection.budgeted:
            return self.features("train")[self.selection.val_idx], self.labels(
                self.selection.val_idx
            )
        return self.features("val"), self.task.val.labels

    @property
    def budget_labels(self) -> np.ndarray:
        return self.labels(self.budget_idx)


def _take(inputs: Any, idx: np.ndarray) -> Any:
    if isinstance(inputs, list | tuple):
        return [inputs[i] for i in idx]
    return inputs[idx]  # an array, or a view of compact image rows


@dataclass
class CellOutcome:
    """What a strategy returns, in the record's own types (:mod:`atlbench.record`); the runner
    adds identity, metrics, selection, provenance and the cost of features.

    ``strategy_facts`` is the one free-form part: facts of this strategy alone (the chosen LoRA
    modules, the LP-FT probe's C), stored and shown under their own names.
    """

    test_pred: np.ndarray
    val_acc: float
    tuning: Tuning  # the chosen values, every trial, how the search ran
    cost: Cost  # the strategy's own clocks, throughput and memory
    trainable_params: int
    total_params: int
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    checkpoint: str | None = None  # the kept fine-tuned encoder (safetensors)
    strategy_facts: dict[str, Any] = field(default_factory=dict)
    # the trained encoder, for measurements after the cell (forgetting); never stored
    encoder: Encoder | None = field(default=None, repr=False)

    @property
    def hparams(self) -> dict[str, Any]:
        return self.tuning.hparams or {}

    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.tuning.trials or []


class _ParamsDefault:
    """Where a strategy that sets no ``Params`` finds its (empty) params model at run time; a
    generic class variable cannot have a default of its own."""

    Params: ClassVar[type[StrategyParams]] = StrategyParams


class Strategy(_ParamsDefault, Generic[ParamsT]):
    """An adaptation strategy. Subclasses register with ``@register_strategy``, name their
    params model twice (``class Knn(Strategy[KnnParams])`` with ``Params = KnnParams``: the type
    argument for the checker, ``Params`` for suite validation) and set capabilities; they
    implement :meth:`run`."""

    name: ClassVar[str]
    Params: ClassVar[type[ParamsT]]
    version: ClassVar[int] = 1  # bump when results would change, so old cells are not reused
    # -- capabilities ---------------------------------------------------------------------------
    is_baseline: ClassVar[bool] = False  # the from-scratch baseline every gain is measured against
    reads_features: ClassVar[bool] = False  # reads the cached frozen features
    trainable: ClassVar[bool] = False  # runs the training engine, tuned with `training.trials`
    default_search: ClassVar[dict[str, Dimension]] = {}

    @classmethod
    def trains_encoder(cls, params: ParamsT) -> bool:
        """Whether the backbone's weights change (frozen strategies: never)."""
        return cls.trainable

    @classmethod
    def supports(cls, source: Source) -> str | None:
        """Why this strategy cannot adapt ``source`` (e.g. prompt tuning needs a text encoder),
        or None. The plan skips such pairs and says so; it never fails a cell for it."""
        return None

    @classmethod
    def target_group(cls, params: ParamsT) -> tuple[str, ...]:
        """Suite targets trained jointly by this strategy; empty: every target on its own.

        With a group, the strategy runs only on the group's targets, and a cell on one of them
        also trains on (and has in its key) every other member.
        """
        return ()

    def run(self, ctx: CellContext[ParamsT]) -> CellOutcome:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class StrategySpec:
    """A resolved suite strategy: validated params, its own training and search space, roles."""

    label: str
    cls: type[Strategy[Any]]
    params: StrategyParams
    training: TrainingConfig
    search: dict[str, Dimension]
    group: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def is_baseline(self) -> bool:
        return self.cls.is_baseline

    @property
    def trainable(self) -> bool:
        return self.cls.trainable

    @property
    def trains_encoder(self) -> bool:
        return self.cls.trains_encoder(self.params)

    @property
    def reads_features(self) -> bool:
        return self.cls.reads_features

    @property
    def saves_checkpoint(self) -> bool:
        return self.trainable and self.trains_encoder

    @property
    def key_includes_training(self) -> bool:
        return self.trainable

    @property
    def has_random_init_twin(self) -> bool:
        """Frozen strategies are also run on a random-init encoder: the same algorithm without
        the source, which Wang et al. (2019) compare with to call negative transfer."""
        return not self.trainable and not self.is_baseline

    def identity(self) -> dict[str, Any]:
        """What of the strategy determines a cell's result (for its key)."""
        out: dict[str, Any] = {
            "name": self.name,
            "params": self.params.model_dump(),
            "version": self.cls.version,
        }
        if self.key_includes_training:
            # how results are kept and computed does not change them: out of the key
            out["training"] = self.training.model_dump(
                exclude={"keep_checkpoints", "search", "prefix_cache"}
            )
            out["search"] = describe_space(self.search)
        return out

    def make(self) -> Strategy[Any]:
        return self.cls()


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
