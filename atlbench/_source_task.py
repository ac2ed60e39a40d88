"""The source's own task: the data a source model was pre-trained on, held out where possible.

A zoo source names its built-in pre-training task (its test split was never trained on); any
other source may name, with ``eval_on``, a suite target whose labels are its head's classes.
Forgetting (the source head's accuracy on that test split before and after fine-tuning) and the
domain gap (how far a target lies from the source's data) both read it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from atlbench.sources._base import Encoder, Source
from atlbench.targets._base import TaskData
from atlbench.train import PreparedSplit, predict_logits

if TYPE_CHECKING:
    from atlbench.targets.builtin import BuiltinParams


def source_task(study: Any, source: Source) -> TaskData | None:
    """The source's own task, or None when the suite does not know it."""
    if source.pretrain_task is not None:
        from atlbench.targets.builtin import BuiltinParams

        return _builtin_task(BuiltinParams.model_validate(source.pretrain_task))
    if source.eval_on is not None:
        return study.target(source.eval_on).load()
    return None


@lru_cache(maxsize=8)
def _builtin_task(params: BuiltinParams) -> TaskData:
    """A zoo source's pre-training task, generated once per process (as targets are): every
    cell's forgetting check reads it, and a pool of thousands of images takes a second."""
    from atlbench.targets.builtin import load_builtin

    return load_builtin("source-task", params)


class _SourceHead(nn.Module):
    """The encoder followed by its own source-task classifier."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: Any) -> torch.Tensor:
        logits = self.encoder.source_logits(self.encoder(batch))
        assert logits is not None
        return logits


def source_accuracy(encoder: Encoder, task: TaskData, device: torch.device) -> float | None:
    """Accuracy of the encoder's own head on the source task's test split (None: no head, or a
    head whose classes do not match the task's)."""
    head = encoder.source_head()
    if head is None or getattr(head, "out_features", task.num_classes) != task.num_classes:
        return None
    model = _SourceHead(encoder).to(device)
    logits = predict_logits(model, PreparedSplit(encoder, task.test), device)
    return float((logits.argmax(1) == np.asarray(task.test.labels)).mean())
