"""Multi-task fine-tuning: one backbone, one head per target, trained jointly on a suite group.

``{name: multitask, group: [digits5-9, shapes-shifted]}`` in a suite trains the source backbone on
every target of the group at once: each optimiser step adds, to the cell's own cross-entropy, the
cross-entropy of one batch from every other member through that member's head. A cell on one
member selects its learning rate and epoch on that member's validation split only and predicts its
test split once, so each member gets its own honest row; the joint training is therefore repeated
once per member (the price of selecting on each member's own validation data). The other members
use the same label budget and seed as the cell unless ``aux_budget: full``. Targets outside the
group do not get this strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from atlbench.budgets import select_budget
from atlbench.sources.base import Encoder
from atlbench.strategies.base import CellContext, CellOutcome, Strategy
from atlbench.strategies.finetune import FinetuneParams, finetune_groups, train_with_grid
from atlbench.train import Classifier, PreparedSplit, _to_device


class MultiTaskParams(FinetuneParams):
    group: tuple[str, ...]
    aux_weight: float = Field(1.0, gt=0)
    aux_budget: Literal["same", "full"] = "same"

    @field_validator("group")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2:
            raise ValueError("needs at least 2 target ids to train jointly")
        repeated = sorted({t for t in value if value.count(t) > 1})
        if repeated:
            raise ValueError(f"lists target(s) {repeated} more than once")
        return value


class MultiHeadClassifier(Classifier):
    """The cell's own head (``forward``) plus one linear head per other group member."""

    def __init__(self, encoder: Encoder, num_classes: int, aux_classes: Sequence[int]) -> None:
        super().__init__(encoder, num_classes)
        self.aux_heads = nn.ModuleList(nn.Linear(encoder.feature_dim, c) for c in aux_classes)


def auxiliary_term(
    aux: Sequence[PreparedSplit], batch: int, weight: float, seed: int, device: torch.device
) -> Callable[[Classifier, Encoder], Callable[[nn.Module], torch.Tensor]]:
    """A loss factory for ``train_with_grid``: each step draws one batch per other member."""

    def factory(model: Classifier, encoder: Encoder) -> Callable[[nn.Module], torch.Tensor]:
        assert isinstance(model, MultiHeadClassifier)
        rng = np.random.default_rng([seed, 5151])  # the same draws for every grid point

        def loss(_: nn.Module) -> torch.Tensor:
            total = torch.zeros((), device=device)
            for head, split in zip(model.aux_heads, aux, strict=True):
                idx = torch.as_tensor(rng.choice(len(split), min(batch, len(split)), False))
                logits = head(model.encoder(_to_device(split.batch(idx), device)))
                total = total + F.cross_entropy(logits.float(), split.labels[idx].to(device))
            return weight * total

        return loss

    return factory


class MultiTask(Strategy):
    """Fine-tune like ``finetune`` while training on the other targets of a group alongside."""

    name = "multitask"
    Params = MultiTaskParams

    @classmethod
    def target_group(cls, params: Any) -> tuple[str, ...]:
        return tuple(params.group)

    def run(self, ctx: CellContext) -> CellOutcome:
        p: MultiTaskParams = ctx.params
        if not ctx.related:
            raise ValueError("multitask needs the other targets of its group; none were given")
        encoder = ctx.build_encoder(True)
        aux, sizes = [], {}
        for target_id, task in ctx.related.items():
            split = task.train
            if p.aux_budget == "same" and ctx.budget is not None:
                idx = select_budget(split.labels, ctx.budget, ctx.seed, f"{target_id}: ")
                split = split.subset(idx)
            aux.append(PreparedSplit(encoder, split))
            sizes[target_id] = len(split)
        classes = [task.num_classes for task in ctx.related.values()]
        batch = ctx.training.batch_size
        out = train_with_grid(
            ctx,
            True,
            lambda m: [
                *finetune_groups(m, p),
                {"params": list(m.aux_heads.parameters()), "lr_mult": 1.0, "name": "aux_heads"},
            ],
            p.l2sp,
            make_model=lambda enc, n: MultiHeadClassifier(enc, n, classes),
            extra_loss=auxiliary_term(aux, batch, p.aux_weight, ctx.seed, ctx.device),
        )
        out.hparams |= p.model_dump() | {"aux_train_sizes": sizes}
        return out
