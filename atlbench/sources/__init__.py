"""Source models by kind (registry): zoo, timm, hf, checkpoint.

``resolve_source`` turns a suite entry into a :class:`Source` that can build pre-trained and
randomly initialised encoders; its ``arch`` pairs transfer cells with their scratch baseline.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from atlbench.registry import Registry
from atlbench.sources.base import Encoder, Source
from atlbench.sources.checkpoint import CheckpointParams, apply_state_dict, load_state_dict
from atlbench.sources.hf import HFParams, create_hf
from atlbench.sources.timm import TimmParams, check_arch, create_timm
from atlbench.sources.zoo import ZooParams, build_zoo

__all__ = ["SOURCE_KINDS", "Encoder", "Source", "resolve_source", "validate_source"]


@dataclass(frozen=True)
class SourceKind:
    params: type[BaseModel]
    resolve: Callable[[Any, Any, bool], Source]
    check: Callable[[Any], tuple[str, str] | None] = lambda p: None


SOURCE_KINDS: Registry[SourceKind] = Registry("source kind")


def _timm_check(p: Any) -> tuple[str, str] | None:
    problem = check_arch(p.arch)
    return (".arch", problem) if problem else None


def _resolve_timm(entry: Any, p: TimmParams, trust: bool) -> Source:
    def builder(pretrained: bool) -> Encoder:
        return create_timm(p.arch, pretrained and p.pretrained, input_size=p.input_size)

    return Source(
        id=entry.id,
        kind="timm",
        modality="image",
        spec=p.model_dump(),
        arch=f"timm:{p.arch}@{p.input_size or 'default'}",
        fingerprint={"timm": p.model_dump()},
        builder=builder,
        reported_accuracy=entry.reported_accuracy,
    )


def _resolve_checkpoint(entry: Any, p: CheckpointParams, trust: bool) -> Source:
    from pathlib import Path

    from atlbench.cache import content_hash

    def builder(pretrained: bool) -> Encoder:
        encoder = create_timm(p.arch, False, num_classes=p.num_classes, input_size=p.input_size)
        if pretrained:
            apply_state_dict(encoder.model, load_state_dict(p.path), p.path)
        return encoder

    path = Path(p.path).expanduser()
    stat = path.stat() if path.exists() else None
    return Source(
        id=entry.id,
        kind="checkpoint",
        modality="image",
        spec=p.model_dump(),
        arch=f"timm:{p.arch}@{p.input_size or 'default'}",
        fingerprint={
            "checkpoint": p.model_dump(),
            "file": content_hash([stat.st_size, stat.st_mtime_ns]) if stat else None,
        },
        builder=builder,
        reported_accuracy=entry.reported_accuracy,
    )


def _resolve_hf(entry: Any, p: HFParams, trust: bool) -> Source:
    if trust:
        warnings.warn(
            f"source {entry.id!r}: trust_remote_code is on, so {p.model!r} may run its own Python "
            "code when loaded; only use it with repositories you trust",
            UserWarning,
            stacklevel=2,
        )
    return Source(
        id=entry.id,
        kind="hf",
        modality="text",
        spec=p.model_dump(),
        arch=f"hf:{p.model}@{p.revision or 'main'}",
        fingerprint={"hf": p.model_dump()},
        builder=lambda pretrained: create_hf(p, pretrained, trust_remote_code=trust),
        reported_accuracy=entry.reported_accuracy,
    )


def _resolve_zoo(entry: Any, p: ZooParams, trust: bool) -> Source:
    return Source(
        id=entry.id,
        kind="zoo",
        modality="image",
        spec=p.model_dump(),
        arch=f"timm:{p.arch}@{p.input_size}",
        fingerprint={"zoo": p.model_dump()},
        builder=lambda pretrained: build_zoo(p, pretrained),
        pretrain_task=p.pretrain_on,
        reported_accuracy=entry.reported_accuracy,
    )


def _zoo_check(p: Any) -> tuple[str, str] | None:
    from atlbench.suite import _first_error
    from atlbench.targets.builtin import BuiltinParams

    problem = check_arch(p.arch)
    if problem:
        return ".arch", problem
    try:
        BuiltinParams(**p.pretrain_on)
    except ValidationError as err:
        where, message = _first_error(err)
        return f".pretrain_on.{where}", message
    return None


SOURCE_KINDS.register("timm")(SourceKind(TimmParams, _resolve_timm, _timm_check))
SOURCE_KINDS.register("checkpoint")(SourceKind(CheckpointParams, _resolve_checkpoint, _timm_check))
SOURCE_KINDS.register("hf")(SourceKind(HFParams, _resolve_hf))
SOURCE_KINDS.register("zoo")(SourceKind(ZooParams, _resolve_zoo, _zoo_check))


def validate_source(entry: Any) -> tuple[str, str] | None:
    """``(field path suffix, message)`` for the first problem in a source entry, else None."""
    from atlbench.suite import _first_error

    kind = SOURCE_KINDS.get(entry.kind)
    try:
        params = kind.params.model_validate(entry.params)
    except ValidationError as err:
        where, message = _first_error(err)
        return (f".{where}" if where else ""), message
    return kind.check(params)


def resolve_source(entry: Any, trust_remote_code: bool = False) -> Source:
    kind = SOURCE_KINDS.get(entry.kind)
    return kind.resolve(entry, kind.params.model_validate(entry.params), trust_remote_code)
