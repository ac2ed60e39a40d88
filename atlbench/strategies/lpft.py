"""LP-FT (Kumar et al. 2022): linear probe first, then fine-tune everything from that head.

Fine-tuning with a random head sends large, noisy gradients into the backbone early on and distorts
its features; starting from the probe's head keeps the first updates small and well aimed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from atlbench.protocol import Dimension, LogRange
from atlbench.registry import register_strategy
from atlbench.strategies._base import CellContext
from atlbench.strategies.finetune import FinetuneFamily, FinetuneParams
from atlbench.strategies.frozen import LinearProbeParams, ProbeFit, fit_probe
from atlbench.train import Classifier


class LPFTParams(FinetuneParams):
    # The paper fine-tunes all layers at one (searched) learning rate once the head is a probe.
    backbone_lr_mult: float | None = Field(1.0, gt=0, le=1)
    c_grid: tuple[float, ...] = LinearProbeParams.model_fields["c_grid"].default
    probe_max_iter: int = Field(2000, ge=10)


def set_head(model: Classifier, probe: ProbeFit, num_classes: int) -> None:
    """Copy the probe's solution (on raw features) into the classifier's linear head."""
    w, b = probe.head(num_classes)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w, dtype=model.head.weight.dtype))
        model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))


@register_strategy("lp_ft")
class LPFT(FinetuneFamily[LPFTParams]):
    """Linear probe on cached frozen features (C chosen on the selection split), then fine-tune.

    Selection: the probe is fitted on the selection stage's labels and its C chosen on the
    selection split; the retrain refits it on the whole budget with that C.
    """

    version = 3  # 3: budgeted selection and retrain
    Params = LPFTParams
    reads_features = True
    caches_frozen_prefix: ClassVar[bool] = True
    default_search: ClassVar[dict[str, Dimension]] = {"lr": LogRange(low=1e-4, high=3e-3)}

    def __init__(self) -> None:
        self.probe: ProbeFit | None = None

    def prepare_model(
        self, ctx: CellContext[LPFTParams], model: Classifier, labelled: np.ndarray
    ) -> None:
        p = ctx.params
        x = ctx.features("train")[labelled]
        y = ctx.labels(labelled)
        if self.probe is None:  # the selection stage chooses C
            x_va, y_va = ctx.val_features()
            self.probe = fit_probe(x, y, x_va, y_va, p.c_grid, p.probe_max_iter)
            probe = self.probe
        else:  # a retrain refits with the chosen C on what it may use
            probe = fit_probe(x, y, None, None, [self.probe.c], p.probe_max_iter)
        set_head(model, probe, ctx.task.num_classes)

    def describe(self, ctx: CellContext[LPFTParams]) -> dict[str, Any]:
        assert self.probe is not None
        return {"probe_C": self.probe.c, "probe_val_acc": self.probe.val_acc}
