"""Which layers of a model to read, and how a layer's output becomes one vector per example.

Model code (the sources' ``layer_names``, layer-wise learning rates, frozen prefixes) and the CKA
hooks in :mod:`atlbench.similarity` share this: keeping it here lets a source name its blocks
without importing the CKA kernels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["auto_layers", "first_tensor", "pool_output"]

# Names of containers whose children are the network's blocks, in timm (``blocks``, ``stages``,
# ``layers``) and Hugging Face (``encoder.layer``, ``layers``, GPT-2 ``h``, T5 ``block``).
_BLOCK_CONTAINERS = frozenset({"layer", "layers", "blocks", "block", "h", "stages"})
# Names of the module that turns raw input into the first block's input.
_STEM_NAMES = ("stem", "embeddings", "patch_embed", "embed")
_RESNET_STAGE = re.compile(r"layer\d+")


def auto_layers(model: nn.Module) -> list[str]:
    """Names of a model's stem and blocks, in forward order.

    Finds the shallowest block sequence: ResNet-style ``layerK`` stages (their blocks
    ``layerK.i``, stem = the module just before ``layer1``, e.g. ``maxpool``) or a container
    named ``blocks`` / ``stages`` / ``layers`` / ``layer`` / ``h`` / ``block`` (timm ViT and
    ConvNeXt, Hugging Face ``encoder.layer``), with the nearest ``stem`` / ``embeddings`` /
    ``patch_embed`` module first. The list doubles as layer groups for layer-wise learning rates.
    """
    named = dict(model.named_modules())
    candidates: list[tuple[int, int, list[str], str]] = []  # depth, order, blocks, parent
    for order, (name, mod) in enumerate(named.items()):
        prefix = f"{name}." if name else ""
        depth = name.count(".") + 1 if name else 0
        children = list(mod.named_children())
        stage_idx = [
            i
            for i, (c, m) in enumerate(children)
            if _RESNET_STAGE.fullmatch(c) and isinstance(m, (nn.Sequential, nn.ModuleList))
        ]
        if len(stage_idx) >= 2:
            blocks = [
                f"{prefix}{children[i][0]}.{b}"
                for i in stage_idx
                for b, _ in children[i][1].named_children()
            ]
            stem = [f"{prefix}{children[stage_idx[0] - 1][0]}"] if stage_idx[0] > 0 else []
            candidates.append((depth + 1, order, stem + blocks, name))
        last = name.rsplit(".", 1)[-1]
        if (
            name
            and last in _BLOCK_CONTAINERS
            and isinstance(mod, (nn.Sequential, nn.ModuleList))
            and len(mod) > 0
        ):
            blocks = [f"{name}.{c}" for c, _ in mod.named_children()]
            candidates.append((depth, order, _stem_of(named, name) + blocks, name))
    if not candidates:
        top = [c for c, _ in model.named_children()]
        raise ValueError(
            f"auto_layers found no block sequence in {type(model).__name__} (top-level modules:"
            f" {top}); pass layer names from model.named_modules() explicitly"
        )
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


def _stem_of(named: Mapping[str, nn.Module], container: str) -> list[str]:
    parts = container.split(".")
    for k in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:k])
        for stem in _STEM_NAMES:
            candidate = f"{prefix}.{stem}" if prefix else stem
            if candidate in named:
                return [candidate]
    return []


def first_tensor(out: Any) -> torch.Tensor | None:
    """The first tensor of a module output (HF layers return tuples or ModelOutputs)."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out
    if isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        for v in values:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def pool_output(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Make a per-example feature vector.

    3-D outputs are read as (batch, tokens, channels) and mean-pooled over tokens (over the
    attention mask's real tokens when the batch has one): flattening would tie features to token
    positions, which means nothing across padded sentences, and multiplies the width by the
    sequence length. 4-D and larger maps (conv N x C x H x W, or channels-last) are flattened as in
    Kornblith et al. and Nguyen et al., keeping spatial structure; linear CKA is invariant to the
    permutation between layouts.
    """
    if t.ndim == 3:
        if mask is not None and mask.shape == t.shape[:2]:
            w = mask.to(t.device, t.dtype).unsqueeze(-1)
            return (t * w).sum(1) / w.sum(1).clamp_min(1.0)
        return t.mean(1)
    if t.ndim == 1:
        return t.unsqueeze(1)
    return t.reshape(t.shape[0], -1)
