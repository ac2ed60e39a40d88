"""The offline zoo: small timm models pre-trained here, once, on a built-in source task.

``zoo: {arch: test_resnet, pretrain_on: {task: digits, classes: [0, 1, 2, 3, 4]}, epochs: 30}``
trains deterministically and caches the weights (safetensors) under ``$ATLBENCH_CACHE/zoo``, so
the second sweep, and every other suite naming the same recipe, reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from atlbench.cache import atomic_write_bytes, atomic_write_text, cache_dir, content_hash
from atlbench.protocol import TrainingConfig
from atlbench.registry import register_source
from atlbench.sources.base import Source, SourceKind, SourceOptions
from atlbench.sources.timm import TimmEncoder, _known_arch, create_timm, timm_arch_label
from atlbench.targets.base import TaskData
from atlbench.targets.builtin import BuiltinParams, load_builtin
from atlbench.train import Classifier, PreparedSplit, fit, predict_logits

log = logging.getLogger(__name__)
ZOO_VERSION = 2  # 2: pre-training data validated as a built-in task (generator version in key)


class ZooParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str = "test_resnet"
    input_size: int = Field(32, ge=8, le=512)
    pretrain_on: BuiltinParams
    epochs: int = Field(20, ge=1, le=1000)
    seed: int = 0
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        return _known_arch(value)

    @field_validator("pretrain_on", mode="before")
    @classmethod
    def _task_shorthand(cls, value: Any, info: ValidationInfo) -> Any:
        """``pretrain_on: textures`` means ``{task: textures}``; images at ``input_size``."""
        value = {"task": value} if isinstance(value, str) else value
        if isinstance(value, dict):
            return {"size": info.data.get("input_size", 32)} | value
        return value


def zoo_key(params: ZooParams) -> str:
    from atlbench.targets.generators import GENERATOR_VERSION

    return content_hash(
        {"zoo": params.model_dump(), "version": ZOO_VERSION, "data": GENERATOR_VERSION}
    )


def zoo_paths(params: ZooParams) -> tuple[Path, Path]:
    root = cache_dir() / "zoo"
    key = zoo_key(params)
    return root / f"{params.arch}-{key}.safetensors", root / f"{params.arch}-{key}.json"


def is_pretrained(params: ZooParams) -> bool:
    """Whether the recipe's weights are in the cache (their checksum is checked on load)."""
    return all(path.exists() for path in zoo_paths(params))


def pretrain_data(params: ZooParams) -> TaskData:
    """The built-in task a zoo recipe pre-trains on, at the recipe's input size."""
    return load_builtin("zoo-pretrain", params.pretrain_on)


def pretrain(params: ZooParams, progress: Any = None) -> dict[str, Any]:
    """Train the recipe on its built-in task; write weights and a metadata side-car atomically."""
    from safetensors.torch import load, save

    weights_path, meta_path = zoo_paths(params)
    if weights_path.exists() and meta_path.exists():
        try:
            blob = weights_path.read_bytes()
            meta = json.loads(meta_path.read_text())
            if meta.get("weights_sha256") != hashlib.sha256(blob).hexdigest():
                raise ValueError("checksum mismatch")
            load(blob)
            return meta
        except Exception:  # torn, flipped or corrupt entry: recompute, never trust
            log.warning("zoo cache entry %s is corrupt; re-training", weights_path.name)
    task = pretrain_data(params)
    torch.manual_seed(params.seed)
    encoder = create_timm(
        params.arch, pretrained=False, num_classes=0, input_size=params.input_size
    )
    model = Classifier(encoder, task.num_classes)
    train, val = PreparedSplit(encoder, task.train), PreparedSplit(encoder, task.val)
    cfg = TrainingConfig(
        max_epochs=params.epochs,
        patience=params.epochs,
        batch_size=params.batch_size,
        min_epoch_samples=0,
    )

    if progress is not None:
        progress(f"pre-training the offline zoo model {params.arch} on {params.pretrain_on.task} "
                 f"({params.epochs} epochs, once: cached in {weights_path.parent})")  # fmt: skip

    def report(epoch: int, total: int, acc: float) -> None:
        if progress is not None and ((epoch + 1) % 10 == 0 or epoch + 1 == total):
            progress(f"  epoch {epoch + 1}/{total}: validation accuracy {acc:.3f}")

    device = torch.device("cpu")
    result = fit(
        model,
        [{"params": list(model.parameters())}],
        train,
        val,
        cfg,
        device,
        lr=params.lr,
        seed=params.seed,
        on_epoch=report,
    )
    model.load_state_dict(result.best_state)
    test = PreparedSplit(encoder, task.test)
    test_acc = float((predict_logits(model, test, device).argmax(1) == task.test.labels).mean())
    state = {f"encoder.{k}": v.contiguous() for k, v in model.encoder.model.state_dict().items()}
    state |= {f"head.{k}": v.contiguous() for k, v in model.head.state_dict().items()}
    meta = {
        "recipe": params.model_dump(),
        "num_classes": task.num_classes,
        "class_names": task.class_names,
        "val_acc": result.best_val_acc,
        "test_acc": test_acc,
        "epochs": result.epochs_run,
        "train_time_s": result.train_time_s,
    }
    blob = save(state)
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write_bytes(weights_path, blob)
    atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return meta


def build_zoo(params: ZooParams, pretrained: bool) -> TimmEncoder:
    """The zoo model with its pre-training head (so LEEP/NCE see source-class probabilities)."""
    from safetensors.torch import load_file

    if not pretrained:
        return create_timm(
            params.arch, pretrained=False, num_classes=0, input_size=params.input_size
        )
    meta = pretrain(params)
    weights_path, _ = zoo_paths(params)
    state = load_file(str(weights_path))
    encoder = create_timm(
        params.arch, pretrained=False, num_classes=meta["num_classes"], input_size=params.input_size
    )
    backbone = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    encoder.model.load_state_dict(backbone, strict=False)
    encoder.model.get_classifier().load_state_dict(head)
    return encoder


@register_source("zoo")
class ZooSource(SourceKind):
    """``zoo: {arch, pretrain_on, epochs, ...}``: a small model pre-trained here, offline, once.

    Training is deterministic, so the recipe (with the zoo and generator versions) identifies the
    weights. The pre-training task is known, which enables the domain-gap and forgetting studies.
    """

    Params = ZooParams

    @classmethod
    def resolve(cls, source_id: str, params: Any, options: SourceOptions) -> Source:
        p: ZooParams = params
        return Source(
            id=source_id,
            kind=cls.name,
            modality="image",
            arch=timm_arch_label(p.arch, p.input_size),
            fingerprint={"zoo": zoo_key(p)},
            params=p,
            builder=lambda pretrained: build_zoo(p, pretrained),
            pretrain_task=p.pretrain_on.model_dump(),
            opener=partial(pretrain, p),
            opened=partial(is_pretrained, p),
            reported_accuracy=options.reported_accuracy,
            eval_on=options.eval_on,
        )
