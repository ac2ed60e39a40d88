"""timm image models: any architecture, pre-trained from the hub or randomly initialised."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atlbench._hub import hub_reachable, offline_error
from atlbench.datapipe import ImageTransform
from atlbench.errors import SourceError
from atlbench.registry import register_source, suggest
from atlbench.sources._base import Encoder, Source, SourceKind, SourceOptions, images_to_tensor


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


def _known_arch(value: str) -> str:
    problem = check_arch(value)
    if problem:
        raise ValueError(problem)
    return value


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str
    pretrained: bool = True
    input_size: int | None = Field(None, ge=8, le=1024)
    # timm's pretrained tag (``resnet50.a1_in1k`` is arch ``resnet50``, tag ``a1_in1k``)
    pretrained_tag: str | None = Field(None, min_length=1)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        return _known_arch(value)

    @model_validator(mode="after")
    def _tag_once(self) -> TimmParams:
        if self.pretrained_tag is not None:
            if "." in self.arch:
                raise ValueError(
                    f"arch {self.arch!r} already names a tag; drop `pretrained_tag` or the suffix"
                )
            import timm

            tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{self.arch}.*")]
            if self.pretrained_tag not in tags:
                raise ValueError(
                    f"timm has no pretrained tag {self.pretrained_tag!r} for {self.arch!r}"
                    f"{suggest(self.pretrained_tag, tags)}"
                )
        return self

    @property
    def model_name(self) -> str:
        return f"{self.arch}.{self.pretrained_tag}" if self.pretrained_tag else self.arch


class TimmModel(Protocol):
    """What atlbench calls on a timm model: every timm classifier has these, but no common base
    class declares them (``timm.create_model`` returns a plain ``nn.Module``)."""

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def get_classifier(self) -> torch.nn.Module: ...


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
        self.feature_dim = int(self.timm_model.num_features)
        self.has_source_head = keep_source_head and getattr(model, "num_classes", 0) > 0

    def prepare(self, inputs: Any) -> torch.Tensor:
        return images_to_tensor(inputs, self.input_size, self.mean, self.std)

    def image_transform(self) -> ImageTransform:
        return ImageTransform(self.input_size, self.mean, self.std)

    def preprocessing(self) -> tuple[Any, ...]:
        return ("image", self.input_size, self.mean, self.std)

    @property
    def timm_model(self) -> TimmModel:
        """:attr:`model` seen through the methods every timm model has."""
        return cast(TimmModel, self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.timm_model.forward_features(x)
        return self.timm_model.forward_head(features, pre_logits=True)

    def source_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        if not self.has_source_head:
            return None
        head: torch.Tensor = self.timm_model.get_classifier()(features)
        return head

    def source_head(self) -> torch.nn.Module | None:
        if getattr(self.model, "num_classes", 0) > 0:
            return self.timm_model.get_classifier()
        return None

    def layer_names(self) -> list[str]:
        from atlbench._layer_features import auto_layers

        return [f"model.{name}" for name in auto_layers(self.model)]


def cached_weights(model_name: str) -> str | None:
    """A local copy of timm's pre-trained weights in the Hugging Face cache, if there is one."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def create_timm(
    arch: str,
    pretrained: bool,
    num_classes: int | None = None,
    input_size: int | None = None,
    keep_source_head: bool = True,
    tag: str | None = None,
) -> TimmEncoder:
    """Build a timm model; without a reachable hub, only locally cached weights are used."""
    import timm

    problem = check_arch(arch)
    if problem:
        raise SourceError(problem)
    name = f"{arch}.{tag}" if tag else arch
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained and not hub_reachable():
        local = cached_weights(name)
        if local is None:
            raise offline_error(
                "timm weights for",
                name,
                "download them elsewhere and use `checkpoint: {arch: "
                f"{arch}, path: /path/to/model.safetensors}}`, or point HF_HOME at a cache that "
                "holds them",
            )
        kwargs["pretrained_cfg_overlay"] = {"file": local}
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as err:  # hub/network errors come in many types
        raise SourceError(f"timm could not build {name!r}: {err}".splitlines()[0]) from None
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return TimmEncoder(model, size, keep_source_head)


def timm_arch_label(arch: str, input_size: int | None) -> str:
    """The architecture identity that pairs transfer cells with their scratch baseline."""
    return f"timm:{arch}@{input_size or 'default'}"


@register_source("timm")
class TimmSource(SourceKind[TimmParams]):
    """``timm: {arch, pretrained, input_size, pretrained_tag}``: weights from the hub."""

    Params = TimmParams

    @classmethod
    def resolve(cls, source_id: str, params: TimmParams, options: SourceOptions) -> Source:
        p = params

        def builder(pretrained: bool) -> Encoder:
            return create_timm(
                p.arch, pretrained and p.pretrained, input_size=p.input_size, tag=p.pretrained_tag
            )

        return Source(
            id=source_id,
            kind=cls.name,
            modality="image",
            arch=timm_arch_label(p.arch, p.input_size),
            fingerprint={"timm": p.model_dump()},
            params=p,
            builder=builder,
            reported_accuracy=options.reported_accuracy,
            eval_on=options.eval_on,
            needs_hub=p.pretrained,
        )
