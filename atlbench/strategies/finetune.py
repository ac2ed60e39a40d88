"""Fine-tuning (full, top-k blocks, layer-wise LR decay, L2-SP) and the from-scratch baseline.

Both are tuned by the same protocol (:mod:`atlbench.tuning`) with the same number of trials. For
fine-tuning the backbone's learning rate, as a multiple of the head's, is searched by default: a
fixed low multiplier handicaps transfer against a scratch baseline whose whole network trains at
the searched rate (a random initialisation was called "negative (significant)" that way).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import Field

from atlbench.protocol import Dimension, LogRange
from atlbench.registry import register_strategy
from atlbench.sources._base import Encoder
from atlbench.strategies._base import CellContext, StrategyParams
from atlbench.strategies._trainable import LossTerm, TrainableStrategy, Trial
from atlbench.train import Classifier, PreparedSplit


class FinetuneParams(StrategyParams):
    layers: Literal["all", "head"] | int = "all"
    # None: searched (see default_search); a number fixes it and takes it out of the search
    backbone_lr_mult: float | None = Field(None, gt=0, le=1)
    layer_decay: float | None = Field(None, gt=0, le=1)
    l2sp: float = Field(0.0, ge=0)


class ScratchParams(StrategyParams):
    pass


# The same learning-rate range as scratch: neither side is cut off by a narrower space; the
# backbone multiplier lets the search find the small backbone rates fine-tuning often prefers.
FINETUNE_SEARCH: dict[str, Dimension] = {
    "lr": LogRange(low=3e-4, high=1e-2),
    "backbone_lr_mult": LogRange(low=0.03, high=1.0),
}


def block_index(names: list[str], blocks: list[str]) -> list[int]:
    """For each parameter name, the index of its parameter group, 0 (stem) ... top, dense.

    Parameters before the first block (stem, embeddings) go with the stem; after the last (final
    norm), with the last block; so lower layers always get lower learning rates under layer-wise
    decay. Blocks without parameters (e.g. a ResNet's max-pool, which ``auto_layers`` lists as
    the stem) get no index, so ``layers: K`` always means K groups that really train.
    """
    raw, current = [], 0
    for name in names:
        for i, block in enumerate(blocks):
            if name == block or name.startswith(block + "."):
                current = i + 1
                break
        raw.append(current)
    dense = {v: rank for rank, v in enumerate(sorted(set(raw)))}
    return [dense[v] for v in raw]


def finetune_groups(model: Classifier, p: FinetuneParams, mult: float) -> list[dict[str, Any]]:
    """Parameter groups: head at full LR, backbone blocks at ``mult`` (possibly decayed) LRs.

    Blocks below the trained top (``layers: K`` or ``head``) are left out, i.e. frozen.
    """
    encoder = model.encoder
    named = list(encoder.named_parameters())
    idx = block_index([n for n, _ in named], encoder.layer_names())
    n_blocks = max(idx) + 1
    frozen_below = 0
    if p.layers == "head":
        frozen_below = n_blocks
    elif isinstance(p.layers, int):
        frozen_below = max(0, n_blocks - p.layers)
    groups: dict[int, list[torch.nn.Parameter]] = {}
    for (_, prm), i in zip(named, idx, strict=True):
        if i >= frozen_below:
            groups.setdefault(i, []).append(prm)
    out = []
    for i, params in sorted(groups.items()):
        lr_mult = mult
        if p.layer_decay is not None:
            lr_mult *= p.layer_decay ** (n_blocks - 1 - i)
        out.append({"params": params, "lr_mult": lr_mult, "name": f"block{i}"})
    out.append({"params": list(model.head.parameters()), "lr_mult": 1.0, "name": "head"})
    return out


def l2sp_penalty(model: Classifier, alpha: float) -> LossTerm:
    """L2-SP (Li et al. 2018): ``alpha/2 * ||w - w0||^2`` pulls trained backbone weights
    toward their pre-trained values ``w0`` (frozen ones are skipped)."""
    anchors = {
        n: p.detach().clone() for n, p in model.encoder.named_parameters() if p.requires_grad
    }

    def penalty(_: torch.nn.Module) -> torch.Tensor:  # the trainer passes ``model`` back
        total = torch.zeros((), device=next(model.parameters()).device)
        for n, prm in model.encoder.named_parameters():
            if n in anchors and prm.requires_grad:
                total = total + (prm - anchors[n].to(prm.device)).pow(2).sum()
        return 0.5 * alpha * total

    return penalty


# the params of a fine-tuning strategy: FinetuneParams or a model that extends it
FinetuneParamsT = TypeVar("FinetuneParamsT", bound=FinetuneParams)


class _FinetuneParamsDefault:
    """A fine-tuning strategy that names no ``Params`` takes :class:`FinetuneParams`."""

    Params: ClassVar[type[StrategyParams]] = FinetuneParams


class FinetuneFamily(_FinetuneParamsDefault, TrainableStrategy[FinetuneParamsT]):
    """Shared by every strategy that fine-tunes a backbone with a new head."""

    Params: ClassVar[type[FinetuneParamsT]]
    default_search = FINETUNE_SEARCH

    @classmethod
    def trains_encoder(cls, params: FinetuneParamsT) -> bool:
        return params.layers != "head"

    def param_groups(
        self, ctx: CellContext[FinetuneParamsT], model: Classifier, trial: Trial
    ) -> list[dict[str, Any]]:
        p = ctx.params
        mult = trial.get("backbone_lr_mult", p.backbone_lr_mult)
        return finetune_groups(model, p, 1.0 if mult is None else float(mult))

    def extra_loss(
        self,
        ctx: CellContext[FinetuneParamsT],
        model: Classifier,
        trial: Trial,
        train: PreparedSplit,
    ) -> LossTerm | None:
        alpha = float(trial.get("l2sp", ctx.params.l2sp))
        return l2sp_penalty(model, alpha) if alpha > 0 and ctx.pretrained else None


@register_strategy("finetune")
class Finetune(FinetuneFamily[FinetuneParams]):
    """Fine-tune a pre-trained backbone with a new head; the backbone LR multiplier is searched."""

    Params = FinetuneParams

    caches_frozen_prefix: ClassVar[bool] = True  # nothing but the trained top reads the encoder
    version = 4  # 3: tuned backbone LR, budgeted validation, halving; 4: scratch's LR range


@register_strategy("scratch")
class Scratch(TrainableStrategy[ScratchParams]):
    """Same architecture, random init, same number of trials: the baseline transfer must beat.

    Its own search space reaches higher learning rates than fine-tuning's: training from scratch
    needs larger rates and longer schedules (He et al. 2019, "Rethinking ImageNet Pre-training").
    """

    Params = ScratchParams
    is_baseline = True
    version = 2
    default_search: ClassVar[dict[str, Dimension]] = {"lr": LogRange(low=3e-4, high=1e-2)}

    def encoder(self, ctx: CellContext[ScratchParams]) -> Encoder:
        return ctx.build_encoder(False)
