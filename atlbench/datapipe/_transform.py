"""The per-batch step of an image encoder: uint8 NHWC in, normalised float NCHW out.

It runs where the batch is: a batch moves to the GPU as uint8 (a quarter of float32's bytes)
and is converted there. On the CPU it computes exactly what preparing the whole split did, one
batch at a time (every output element depends only on its own image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def normalise_images(
    images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> float ``(N, C, size, size)``, scaled to [0, 1], bilinearly
    resized when needed, then normalised by ``mean`` and ``std``."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


@dataclass(frozen=True)
class ImageTransform:
    """An encoder's input size and normalisation, applied per batch (see the module doc)."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return normalise_images(images, self.size, self.mean, self.std)
