"""Gradual unfreezing (Howard & Ruder 2018, ULMFiT): open the network one block group at a time.

Fine-tuning everything at once can wreck pre-trained features while the new head is still random;
training the head first and then opening the backbone from the top down lets each layer adapt to an
already sensible signal from above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field

from atlbench.strategies.base import CellContext, CellOutcome, Strategy
from atlbench.strategies.finetune import FinetuneParams, finetune_groups, train_with_grid
from atlbench.train import Classifier


class GradualUnfreezeParams(FinetuneParams):
    # ULMFiT unfreezes one more layer group every epoch, and uses the same learning rate throughout
    # (its discriminative rates are available here as ``layer_decay``).
    unfreeze_every: int = Field(1, ge=1)
    backbone_lr_mult: float = Field(1.0, gt=0, le=1)


def unfreeze_schedule(groups: list[dict[str, Any]], every: int) -> Callable[[int], None]:
    """An ``on_epoch_start`` hook: at epoch ``e`` the head plus the top ``e // every`` groups train.

    ``groups`` are :func:`finetune_groups` output (backbone groups bottom-up, then ``head``). The
    state is a pure function of the epoch, so replaying epochs (an OOM retry) is safe. Frozen
    parameters get no gradient, so AdamW neither moves nor decays them.
    """
    backbone = [g for g in groups if g.get("name") != "head"]

    def on_epoch_start(epoch: int) -> None:
        open_groups = epoch // every
        for rank, group in enumerate(reversed(backbone)):  # rank 0 = the top block group
            trainable = rank < open_groups
            for prm in group["params"]:
                prm.requires_grad_(trainable)
                if not trainable:
                    prm.grad = None

    return on_epoch_start


def trainable_groups(groups: list[dict[str, Any]]) -> list[str]:
    """Names of the groups whose parameters currently train (for tests and logs)."""
    return [
        g.get("name", "?")
        for g in groups
        if any(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in g["params"])
    ]


class GradualUnfreeze(Strategy):
    """Fine-tune, opening the backbone top-down: a block group every ``unfreeze_every`` epochs."""

    name = "gradual_unfreeze"
    version = 2  # 2: dense block groups (layers: K and layer_decay fixed)
    Params = GradualUnfreezeParams

    def run(self, ctx: CellContext) -> CellOutcome:
        p: GradualUnfreezeParams = ctx.params

        def hook(model: Classifier, groups: list[dict[str, Any]]) -> Callable[[int], None]:
            return unfreeze_schedule(groups, p.unfreeze_every)

        out = train_with_grid(
            ctx, True, lambda m: finetune_groups(m, p), l2sp=p.l2sp, epoch_hook=hook
        )
        out.hparams |= p.model_dump()
        return out
