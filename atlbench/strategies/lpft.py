"""LP-FT (Kumar et al. 2022): linear probe first, then fine-tune everything from that head.

Fine-tuning with a random head sends large, noisy gradients into the backbone early on and distorts
its features; starting from the probe's head keeps the first updates small and well aimed.
"""

from __future__ import annotations

import time

import torch
from pydantic import Field

from atlbench.strategies.base import CellContext, CellOutcome, Strategy
from atlbench.strategies.finetune import FinetuneParams, finetune_groups, train_with_grid
from atlbench.strategies.frozen import LinearProbeParams, ProbeFit, fit_probe
from atlbench.train import Classifier


class LPFTParams(FinetuneParams):
    # The paper fine-tunes all layers at one learning rate once the head is a good probe.
    backbone_lr_mult: float = Field(1.0, gt=0, le=1)
    c_grid: tuple[float, ...] = LinearProbeParams.model_fields["c_grid"].default
    probe_max_iter: int = Field(2000, ge=10)


def set_head(model: Classifier, probe: ProbeFit, num_classes: int) -> None:
    """Copy the probe's solution (on raw features) into the classifier's linear head."""
    w, b = probe.head(num_classes)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w, dtype=model.head.weight.dtype))
        model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))


class LPFT(Strategy):
    """Linear probe on cached frozen features (C picked on validation), then full fine-tuning."""

    name = "lp_ft"
    version = 2  # 2: dense block groups (layers: K and layer_decay fixed)
    Params = LPFTParams
    # Reads the feature cache too, but its result depends on the training budget, so it must stay
    # False: the plan leaves the training section out of the keys of feature-only strategies.
    uses_features = False

    def run(self, ctx: CellContext) -> CellOutcome:
        p: LPFTParams = ctx.params
        started = time.perf_counter()
        probe = fit_probe(
            ctx.features("train")[ctx.train_idx],
            ctx.train_labels,
            ctx.features("val"),
            ctx.task.val.labels,
            p.c_grid,
            p.probe_max_iter,
        )
        probe_seconds = time.perf_counter() - started
        num_classes = ctx.task.num_classes
        out = train_with_grid(
            ctx,
            True,
            lambda m: finetune_groups(m, p),
            l2sp=p.l2sp,
            init_model=lambda m: set_head(m, probe, num_classes),
        )
        out.hparams |= p.model_dump() | {"probe_C": probe.c}
        # the probe's C grid is part of what this recipe costs
        out.timing["selection_time_s"] = out.timing.get("selection_time_s", 0.0) + probe_seconds
        out.timing["probe_time_s"] = probe_seconds
        out.extra |= {"probe_val_acc": probe.val_acc, "probe_grid": probe.grid}
        return out
