"""What every source model looks like to the rest of atlbench: an encoder of pooled features.

A source builds an :class:`Encoder` twice over: pre-trained (for transfer) and randomly initialised
with the same architecture (the scratch baseline). Both map a model-ready batch to features (B, D).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from atlbench.datapipe import ImageRows, ImageTransform, normalise_images

Batch = Any  # a tensor (images) or a dict of tensors (tokenised text)
Progress = Callable[[str], None]


class Encoder(nn.Module):
    """A backbone that turns a prepared batch into pooled features of size ``feature_dim``."""

    modality: str = "image"
    feature_dim: int = 0

    def prepare(self, inputs: Any) -> Batch:
        """Turn raw split inputs (uint8 images or strings) into a model-ready CPU batch."""
        raise NotImplementedError

    def image_transform(self) -> ImageTransform | None:
        """The per-batch step that turns uint8 images into model input on the device (resize,
        normalise), so image splits stay compact until the batch; None: inputs are prepared
        whole by :meth:`prepare` (text, or an encoder without such a step)."""
        return None

    def layer_names(self) -> list[str]:
        """Named blocks from input to output: used for layer-wise learning rates and CKA."""
        raise NotImplementedError

    def preprocessing(self) -> Hashable | None:
        """What :meth:`prepare` depends on (tokenizer and length, or size and normalisation), so
        prepared inputs can be shared between cells; None: do not share."""
        return None

    def frozen_prefix(self, blocks: int) -> Any:
        """A :class:`~atlbench._frozen_prefix.FrozenPrefix` over the first ``blocks`` of
        :meth:`layer_names`, or None when this encoder cannot run from a block's output."""
        return None

    def source_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """Logits of the source task's own classifier (LEEP/NCE need them); None if absent."""
        return None

    def source_head(self) -> nn.Module | None:
        """The source task's classifier module, if the encoder holds one (not backbone)."""
        return None


def move_batch(batch: Batch, device: torch.device | str) -> Batch:
    """Move a tensor or a dict of tensors to ``device`` (non-blocking where it helps)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    raise TypeError(f"unsupported batch type {type(batch).__name__}")


def batch_size_of(batch: Batch) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    return int(next(iter(batch.values())).shape[0])


def images_to_tensor(
    images: np.ndarray | ImageRows | Sequence[np.ndarray],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """uint8 HWC images (an array, or a list of mixed sizes) -> normalised NCHW at ``size``."""
    if isinstance(images, ImageRows):
        images = images.read()
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return normalise_images(torch.from_numpy(np.ascontiguousarray(images)), size, mean, std)
    parts = []
    for image in images:
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255.0
        parts.append(F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False))
    x = torch.cat(parts)
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


@dataclass
class Source:
    """A resolved source model: how to build it, and what identifies its weights and arch.

    ``fingerprint`` identifies the *content* of the weights (a checkpoint's digest, a zoo recipe,
    a hub id and revision), so cell keys follow the weights, not the suite's names or paths.
    ``arch`` pairs transfer cells with the random-init and scratch cells of the same architecture.
    """

    id: str
    kind: str
    modality: str
    arch: str
    fingerprint: dict[str, Any]
    params: BaseModel | None = None  # the source kind's validated params model
    builder: Callable[[bool], Encoder] | None = field(repr=False, default=None)
    # the built-in task (BuiltinParams fields) the source was pre-trained on, if known
    pretrain_task: dict[str, Any] | None = None
    reported_accuracy: float | None = None
    needs_hub: bool = False  # building the pre-trained weights would download them
    # a suite target whose labels are the source head's classes (``eval_on``): with a known
    # pre-training task, it measures how much fine-tuning forgets of the source task
    eval_on: str | None = None
    # what pre-flight runs instead of a plain build (the zoo pre-trains here, with progress);
    # picklable, so pre-flight can run several in worker processes at once
    opener: Callable[[Progress | None], object] | None = field(repr=False, default=None)
    # True when the opener has nothing left to do (its result is cached)
    opened: Callable[[], bool] | None = field(repr=False, default=None)

    def build(self, pretrained: bool = True) -> Encoder:
        """A fresh encoder: pre-trained weights, or random init of the same architecture."""
        if self.builder is None:
            raise TypeError(f"source {self.id!r} has no builder")
        return self.builder(pretrained)

    def open(self, progress: Progress | None = None) -> None:
        """Pre-flight: load the pre-trained weights once, so a bad source fails before any work."""
        if self.opener is not None:
            self.opener(progress)
        self.build(True)


# a source kind's params model (``TimmParams``, ``ZooParams``, ...)
SourceParamsT = TypeVar("SourceParamsT", bound=BaseModel)


class SourceKind(Generic[SourceParamsT]):
    """One kind of source (timm, hf, checkpoint, zoo): its suite params and how to resolve them.

    Subclasses register with ``@register_source("name")`` in their own module, name their params
    model (``class TimmSource(SourceKind[TimmParams])`` with ``Params = TimmParams``) and
    implement :meth:`resolve`, which turns validated params into a :class:`Source` (content
    fingerprint included) without loading any weights.
    """

    name: ClassVar[str]
    Params: ClassVar[type[SourceParamsT]]

    @classmethod
    def resolve(cls, source_id: str, params: SourceParamsT, options: SourceOptions) -> Source:
        raise NotImplementedError


@dataclass(frozen=True)
class SourceOptions:
    """Suite-level settings a source kind may need while resolving."""

    trust_remote_code: bool = False
    reported_accuracy: float | None = None
    eval_on: str | None = None
