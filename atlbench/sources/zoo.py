"""The offline zoo: small timm models pre-trained here, once, on a built-in source task.

``zoo: {arch: test_resnet, pretrain_on: {task: digits, classes: [0, 1, 2, 3, 4]}, epochs: 30}``
trains deterministically and caches the weights (safetensors) under ``$ATLBENCH_CACHE/zoo``, so
the second sweep, and every other suite naming the same recipe, reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from atlbench.cache import atomic_write_bytes, atomic_write_text, cache_dir, content_hash
from atlbench.sources.timm import TimmEncoder, create_timm

if TYPE_CHECKING:
    from atlbench.targets.base import TaskData

log = logging.getLogger(__name__)
ZOO_VERSION = 1


class ZooParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: str = "test_resnet"
    pretrain_on: dict[str, Any]
    epochs: int = Field(20, ge=1, le=1000)
    seed: int = 0
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    input_size: int = Field(32, ge=8, le=512)

    @field_validator("pretrain_on", mode="before")
    @classmethod
    def _task_shorthand(cls, value: Any) -> Any:
        """``pretrain_on: textures`` means ``{task: textures}``."""
        return {"task": value} if isinstance(value, str) else value


def zoo_key(params: ZooParams) -> str:
    return content_hash({"zoo": params.model_dump(), "version": ZOO_VERSION})


def zoo_paths(params: ZooParams) -> tuple[Path, Path]:
    root = cache_dir() / "zoo"
    key = zoo_key(params)
    return root / f"{params.arch}-{key}.safetensors", root / f"{params.arch}-{key}.json"


def pretrain_data(params: ZooParams) -> TaskData:
    """The built-in task a zoo recipe pre-trains on, at the recipe's input size."""
    from atlbench.targets.builtin import BuiltinParams, load_builtin

    return load_builtin(
        "zoo-pretrain", BuiltinParams(**({"size": params.input_size} | params.pretrain_on))
    )


def pretrain(params: ZooParams, progress: Any = None) -> dict[str, Any]:
    """Train the recipe on its built-in task; write weights and a metadata side-car atomically."""
    from safetensors.torch import load, save

    from atlbench.train import Classifier, PreparedSplit, TrainConfig, fit, predict_logits

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
    cfg = TrainConfig(
        lr=params.lr,
        max_epochs=params.epochs,
        patience=params.epochs,
        batch_size=params.batch_size,
        seed=params.seed,
    )

    def report(epoch: int, total: int, acc: float) -> None:
        if progress is not None:
            progress(f"zoo pre-training {params.arch} epoch {epoch + 1}/{total} val {acc:.3f}")

    device = torch.device("cpu")
    result = fit(
        model, [{"params": list(model.parameters())}], train, val, cfg, device, on_epoch=report
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
