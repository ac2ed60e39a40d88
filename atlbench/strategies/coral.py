"""Fine-tuning with Deep CORAL (Sun & Saenko 2016) on the unlabelled rest of the target.

A label budget leaves most of the target's training split unlabelled. Deep CORAL adds
``||C_l - C_u||_F^2 / (4 d^2)``, the distance between the feature covariances of a labelled batch
and of an unlabelled batch, so the few labelled examples cannot pull the representation away from
the statistics of the data the model will actually see. Only the unlabelled examples' inputs are
used, never their labels, and never the validation or test splits. The extra forward passes
run in training mode, so BatchNorm running statistics also see the unlabelled data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import Field

from atlbench.sources.base import Encoder
from atlbench.strategies.base import CellContext, CellOutcome, Strategy
from atlbench.strategies.finetune import FinetuneParams, finetune_groups, train_with_grid
from atlbench.train import Classifier, PreparedSplit, _to_device


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
) -> Callable[[Classifier, Encoder], Callable[[torch.nn.Module], torch.Tensor]]:
    """A loss factory for ``train_with_grid``: each call draws a fresh labelled/unlabelled pair."""

    def factory(model: Classifier, encoder: Encoder) -> Callable[[torch.nn.Module], torch.Tensor]:
        rng = np.random.default_rng([seed, 4242])  # same draws for every grid point

        def loss(_: torch.nn.Module) -> torch.Tensor:
            ia = torch.as_tensor(rng.choice(len(labelled), min(batch, len(labelled)), False))
            ib = torch.as_tensor(rng.choice(len(unlabelled), min(batch, len(unlabelled)), False))
            fa = model.encoder(_to_device(labelled.batch(ia), device))
            fb = model.encoder(_to_device(unlabelled.batch(ib), device))
            return weight * coral_loss(fa, fb)

        return loss

    return factory


class Coral(Strategy):
    """Fine-tune like ``finetune`` plus the CORAL term on the unlabelled remainder of train."""

    name = "coral"
    Params = CoralParams

    def run(self, ctx: CellContext) -> CellOutcome:
        p: CoralParams = ctx.params
        rest = np.setdiff1d(np.arange(len(ctx.task.train)), ctx.train_idx)
        if len(rest) < 4 or len(ctx.train_idx) < 4:
            raise ValueError(
                f"coral needs at least 4 labelled and 4 unlabelled training examples; this budget "
                f"leaves {len(ctx.train_idx)} labelled and {len(rest)} unlabelled"
            )
        # only coral_batch rows are drawn per step: a bounded, seeded pool keeps memory small
        cap = 64 * p.coral_batch
        if len(rest) > cap:
            rest = np.sort(np.random.default_rng([ctx.seed, 4243]).choice(rest, cap, replace=False))
        encoder = ctx.build_encoder(True)
        labelled = PreparedSplit(encoder, ctx.task.train.subset(ctx.train_idx))
        unlabelled = PreparedSplit(encoder, ctx.task.train.subset(rest))
        term = coral_term(labelled, unlabelled, p.coral_batch, p.coral_weight, ctx.seed, ctx.device)
        out = train_with_grid(ctx, True, lambda m: finetune_groups(m, p), p.l2sp, extra_loss=term)
        out.hparams |= p.model_dump() | {"n_unlabelled": len(rest)}
        return out
