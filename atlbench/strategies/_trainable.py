"""The base class of every strategy that trains (fine-tuning, LoRA, LP-FT, ..., scratch).

A trainable strategy only says what is specific to it, in small template methods: which model to
build, which parameter groups train at which rates, an extra loss term, a per-epoch hook, how to
export the encoder. The tuning protocol (trials, successive halving, budgeted selection, retrain,
one prediction of the test split) is the same for all of them and lives in :mod:`atlbench.tuning`,
so equal tuning holds by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from atlbench.protocol import Dimension, LogRange
from atlbench.sources._base import Encoder
from atlbench.strategies._base import CellContext, CellOutcome, ParamsT, Strategy
from atlbench.train import Classifier, PreparedSplit
from atlbench.tuning import LossTerm, Trial, tune

__all__ = ["LossTerm", "TrainableStrategy", "Trial"]


class TrainableStrategy(Strategy[ParamsT]):
    """Template for trainable strategies; :meth:`run` is the shared tuning protocol."""

    trainable: ClassVar[bool] = True
    # may train on cached outputs of its frozen bottom blocks (atlbench._frozen_prefix): only when
    # nothing but the trained top reads the encoder during training
    caches_frozen_prefix: ClassVar[bool] = False
    # Every trainable strategy searches its learning rate; subclasses add their own knobs.
    default_search: ClassVar[dict[str, Dimension]] = {"lr": LogRange(low=3e-4, high=3e-3)}

    def run(self, ctx: CellContext[ParamsT]) -> CellOutcome:
        return tune(self, ctx)

    # -- template methods -------------------------------------------------------------------
    def encoder(self, ctx: CellContext[ParamsT]) -> Encoder:
        """The encoder to train: pre-trained weights, or random init for the baseline/twin."""
        return ctx.build_encoder(ctx.pretrained)

    def model(self, ctx: CellContext[ParamsT], encoder: Encoder) -> Classifier:
        """The network: the encoder plus a new head (multi-task adds heads)."""
        return Classifier(encoder, ctx.task.num_classes)

    def prepare_model(
        self, ctx: CellContext[ParamsT], model: Classifier, labelled: np.ndarray
    ) -> None:
        """Set the weights every run of a stage starts from, given the labels it may use
        (LP-FT fits its probe head here); ``labelled`` are train-split indices."""

    def param_groups(
        self, ctx: CellContext[ParamsT], model: Classifier, trial: Trial
    ) -> list[dict[str, Any]]:
        """Optimizer groups with an ``lr_mult`` each; parameters left out are frozen."""
        return [{"params": list(model.parameters()), "lr_mult": 1.0, "name": "all"}]

    def extra_loss(
        self, ctx: CellContext[ParamsT], model: Classifier, trial: Trial, train: PreparedSplit
    ) -> LossTerm | None:
        """A term added to every step's loss (L2-SP, CORAL, auxiliary tasks); ``train`` is the
        labelled data of the current stage."""
        return None

    def epoch_hook(
        self,
        ctx: CellContext[ParamsT],
        model: Classifier,
        groups: list[dict[str, Any]],
        trial: Trial,
    ) -> Callable[[int], None] | None:
        """Called at the start of every epoch with the epoch index (gradual unfreezing)."""
        return None

    def export_encoder(self, encoder: Encoder) -> Encoder:
        """The encoder a checkpoint stores (LoRA merges its adapters back)."""
        return encoder

    def describe(self, ctx: CellContext[ParamsT]) -> dict[str, Any]:
        """Strategy-specific facts for the record (chosen LoRA modules, probe C, ...)."""
        return {}
