"""timm image models: any architecture, pre-trained from the hub or randomly initialised."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from atlbench.errors import SourceError
from atlbench.hub import offline_error, prepare_hub_access
from atlbench.registry import suggest
from atlbench.sources.base import Encoder, images_to_tensor


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: str
    pretrained: bool = True
    input_size: int | None = Field(None, ge=8, le=1024)
    pretrained_tag: str | None = None


@lru_cache(maxsize=1)
def timm_architectures() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def check_arch(arch: str) -> str | None:
    """None if timm knows ``arch``, else the error message with a 'did you mean'."""
    base = arch.split(".", 1)[0]
    if base in timm_architectures():
        return None
    return f"unknown architecture {arch!r}{suggest(base, timm_architectures())}"


class TimmEncoder(Encoder):
    """Wraps a timm classifier: pooled pre-logits are the features, its head the source head."""

    modality = "image"

    def __init__(self, model: torch.nn.Module, input_size: int, keep_source_head: bool) -> None:
        super().__init__()
        self.model = model
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.input_size = input_size
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.feature_dim = int(model.num_features)
        self.has_source_head = keep_source_head and getattr(model, "num_classes", 0) > 0

    def prepare(self, inputs: Any) -> torch.Tensor:
        return images_to_tensor(inputs, self.input_size, self.mean, self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(x)
        return self.model.forward_head(features, pre_logits=True)

    def source_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        if not self.has_source_head:
            return None
        return self.model.get_classifier()(features)

    def layer_names(self) -> list[str]:
        from atlbench.similarity import auto_layers

        return [f"model.{name}" for name in auto_layers(self.model)]


def create_timm(
    arch: str,
    pretrained: bool,
    num_classes: int | None = None,
    input_size: int | None = None,
    keep_source_head: bool = True,
) -> TimmEncoder:
    """Build a timm model; offline hub failures become one clear line."""
    import timm

    problem = check_arch(arch)
    if problem:
        raise SourceError(problem)
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained:
        prepare_hub_access()
    try:
        model = timm.create_model(arch, pretrained=pretrained, **kwargs)
    except Exception as err:  # hub/network errors come in many types
        if pretrained and _looks_offline(err):
            raise offline_error(
                "timm weights for",
                arch,
                "download them elsewhere and use `checkpoint: {arch: "
                f"{arch}, path: /path/to/model.safetensors}}`, or point HF_HOME at a cache that "
                "holds them",
            ) from None
        raise SourceError(f"timm could not build {arch!r}: {err}") from None
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return TimmEncoder(model, size, keep_source_head)


def _looks_offline(err: Exception) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return any(
        word in text
        for word in ("offline", "connection", "resolve", "network", "localentrynotfound", "hub")
    )
