"""Fine-tuning with Deep CORAL (Sun & Saenko 2016) on the unlabelled rest of the target.

A label budget leaves most of the target's training split unlabelled. Deep CORAL adds
``||C_l - C_u||_F^2 / (4 d^2)``, the distance between the feature covariances of a labelled batch
and of an unlabelled batch, so the few labelled examples cannot pull the representation away from
the statistics of the data the model will actually see. Only the unlabelled examples' inputs
are used, never their labels (the runner hides them), never the validation or test splits. The
extra forward passes run in training mode, so BatchNorm running statistics also see the
unlabelled data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from atlbench.registry import register_strategy
from atlbench.strategies._base import CellContext
from atlbench.strategies._trainable import LossTerm, Trial
from atlbench.strategies.finetune import FinetuneFamily, FinetuneParams
from atlbench.train import Classifier, PreparedSplit


class CoralParams(FinetuneParams):
    coral_weight: float = Field(1.0, ge=0)
    coral_batch: int = Field(32, ge=4)


def coral_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: squared Frobenius distance of the two feature covariances over 4 d^2."""
    d = a.shape[1]
    diff = torch.cov(a.T.float()) - torch.cov(b.T.float())
    return (diff * diff).sum() / (4.0 * d * d)


def coral_term(
    labelled: PreparedSplit,
    unlabelled: PreparedSplit,
    batch: int,
    weight: float,
    seed: int,
    device: torch.device,
    model: Classifier,
) -> LossTerm:
    """The per-step CORAL loss: each call draws a fresh labelled/unlabelled pair of batches.

    Every trial draws the same sequence (the generator is seeded from the cell's seed).
    """
    rng = np.random.default_rng([seed, 4242])

    def loss(_: torch.nn.Module) -> torch.Tensor:
        ia = torch.as_tensor(rng.choice(len(labelled), min(batch, len(labelled)), False))
        ib = torch.as_tensor(rng.choice(len(unlabelled), min(batch, len(unlabelled)), False))
        fa = model.encoder(labelled.device_batch(ia, device))
        fb = model.encoder(unlabelled.device_batch(ib, device))
        return weight * coral_loss(fa, fb)

    return loss


def unlabelled_pool(ctx: CellContext[Any], batch: int) -> np.ndarray:
    """Train indices outside the budget (their inputs only), capped at a seeded ``64 * batch``."""
    rest = np.setdiff1d(np.arange(len(ctx.task.train)), ctx.budget_idx)
    if len(rest) < 4 or len(ctx.budget_idx) < 4:
        raise ValueError(
            f"coral needs at least 4 labelled and 4 unlabelled training examples; this budget "
            f"leaves {len(ctx.budget_idx)} labelled and {len(rest)} unlabelled"
        )
    cap = 64 * batch  # only `batch` rows are drawn per step: a bounded pool keeps memory small
    if len(rest) > cap:
        rest = np.sort(np.random.default_rng([ctx.seed, 4243]).choice(rest, cap, replace=False))
    return rest


@register_strategy("coral")
class Coral(FinetuneFamily[CoralParams]):
    """Fine-tune like ``finetune`` plus the CORAL term on the unlabelled remainder of train."""

    Params = CoralParams
    version = 2  # 2: tuned by the shared protocol

    def __init__(self) -> None:
        self.unlabelled: PreparedSplit | None = None
        self.pool = 0

    def extra_loss(
        self, ctx: CellContext[CoralParams], model: Classifier, trial: Trial, train: PreparedSplit
    ) -> LossTerm | None:
        p = ctx.params
        if self.unlabelled is None:
            rest = unlabelled_pool(ctx, p.coral_batch)
            inputs = ctx.task.train.subset(rest)  # labels stay hidden (-1): never read
            self.unlabelled, self.pool = PreparedSplit(model.encoder, inputs), len(rest)
        coral = coral_term(
            train, self.unlabelled, p.coral_batch, p.coral_weight, ctx.seed, ctx.device, model
        )
        l2sp = super().extra_loss(ctx, model, trial, train)
        if l2sp is None:
            return coral
        return lambda m: coral(m) + l2sp(m)

    def describe(self, ctx: CellContext[CoralParams]) -> dict[str, Any]:
        return {"n_unlabelled": self.pool}
