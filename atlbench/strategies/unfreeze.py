"""Gradual unfreezing (Howard & Ruder 2018, ULMFiT): open the network one block group at a time.

Fine-tuning everything at once can wreck pre-trained features while the new head is still random;
training the head first and then opening the backbone from the top down lets each layer adapt to an
already sensible signal from above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from atlbench.protocol import Dimension, LogRange
from atlbench.registry import register_strategy
from atlbench.strategies._base import CellContext
from atlbench.strategies._trainable import Trial
from atlbench.strategies.finetune import FinetuneFamily, FinetuneParams
from atlbench.train import Classifier


class GradualUnfreezeParams(FinetuneParams):
    # ULMFiT unfreezes one more layer group every epoch, and uses the same learning rate throughout
    # (its discriminative rates are available here as ``layer_decay``).
    unfreeze_every: int = Field(1, ge=1)
    backbone_lr_mult: float | None = Field(1.0, gt=0, le=1)


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


@register_strategy("gradual_unfreeze")
class GradualUnfreeze(FinetuneFamily[GradualUnfreezeParams]):
    """Fine-tune, opening the backbone top-down: a block group every ``unfreeze_every`` epochs."""

    version = 3  # 3: tuned, budgeted selection, frozen groups in eval mode
    Params = GradualUnfreezeParams
    default_search: ClassVar[dict[str, Dimension]] = {"lr": LogRange(low=3e-4, high=3e-3)}

    def epoch_hook(
        self,
        ctx: CellContext[GradualUnfreezeParams],
        model: Classifier,
        groups: list[dict[str, Any]],
        trial: Trial,
    ) -> Callable[[int], None] | None:
        return unfreeze_schedule(groups, ctx.params.unfreeze_every)
