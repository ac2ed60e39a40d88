"""Multi-task fine-tuning: one backbone, one head per target, trained jointly on a suite group.

``{name: multitask, group: [digits5-9, shapes-shifted]}`` in a suite trains the source backbone on
every target of the group at once: each optimiser step adds, to the cell's own cross-entropy, the
cross-entropy of one batch from every other member through that member's head. A cell on one
member selects its hyperparameters on that member's selection split only and predicts its
test split once, so each member gets its own honest row; the joint training is therefore repeated
once per member (the price of selecting on each member's own validation data). The other members
use the same label budget and seed as the cell unless ``aux_budget: full``. Targets outside the
group do not get this strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from atlbench.budgets import select_budget
from atlbench.registry import register_strategy
from atlbench.sources._base import Encoder
from atlbench.strategies._base import CellContext
from atlbench.strategies._trainable import LossTerm, Trial
from atlbench.strategies.finetune import FinetuneFamily, FinetuneParams
from atlbench.train import Classifier, PreparedSplit


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
    model: MultiHeadClassifier,
    aux: Sequence[PreparedSplit],
    batch: int,
    weight: float,
    seed: int,
    device: torch.device,
) -> LossTerm:
    """Each step draws one batch per other member (the same draws for every trial)."""
    rng = np.random.default_rng([seed, 5151])

    def loss(_: nn.Module) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for head, split in zip(model.aux_heads, aux, strict=True):
            idx = torch.as_tensor(rng.choice(len(split), min(batch, len(split)), False))
            logits = head(model.encoder(split.device_batch(idx, device)))
            total = total + F.cross_entropy(logits.float(), split.labels[idx].to(device))
        return weight * total

    return loss


@register_strategy("multitask")
class MultiTask(FinetuneFamily[MultiTaskParams]):
    """Fine-tune like ``finetune`` while training on the other targets of a group alongside."""

    Params = MultiTaskParams
    version = 2  # 2: tuned by the shared protocol

    def __init__(self) -> None:
        self.aux: list[PreparedSplit] = []
        self.sizes: dict[str, int] = {}

    @classmethod
    def target_group(cls, params: MultiTaskParams) -> tuple[str, ...]:
        return tuple(params.group)

    def model(self, ctx: CellContext[MultiTaskParams], encoder: Encoder) -> Classifier:
        p = ctx.params
        if not ctx.related:
            raise ValueError("multitask needs the other targets of its group; none were given")
        for target_id, task in ctx.related.items():
            split = task.train
            if p.aux_budget == "same" and ctx.budget is not None:
                idx = select_budget(split.labels, ctx.budget, ctx.seed, f"{target_id}: ")
                split = split.subset(idx)
            self.aux.append(PreparedSplit(encoder, split))
            self.sizes[target_id] = len(split)
        classes = [task.num_classes for task in ctx.related.values()]
        return MultiHeadClassifier(encoder, ctx.task.num_classes, classes)

    def param_groups(
        self, ctx: CellContext[MultiTaskParams], model: Classifier, trial: Trial
    ) -> list[dict[str, Any]]:
        assert isinstance(model, MultiHeadClassifier)
        aux = {"params": list(model.aux_heads.parameters()), "lr_mult": 1.0, "name": "aux_heads"}
        return [*super().param_groups(ctx, model, trial), aux]

    def extra_loss(
        self,
        ctx: CellContext[MultiTaskParams],
        model: Classifier,
        trial: Trial,
        train: PreparedSplit,
    ) -> LossTerm | None:
        assert isinstance(model, MultiHeadClassifier)
        p = ctx.params
        aux = auxiliary_term(
            model, self.aux, ctx.training.batch_size, p.aux_weight, ctx.seed, ctx.device
        )
        l2sp = super().extra_loss(ctx, model, trial, train)
        return aux if l2sp is None else (lambda m: aux(m) + l2sp(m))

    def describe(self, ctx: CellContext[MultiTaskParams]) -> dict[str, Any]:
        return {"aux_train_sizes": dict(self.sizes)}
