"""The offline zoo: small models pre-trained here, once, on a built-in source task.

``zoo: {arch: test_resnet, pretrain_on: {task: digits, classes: [0, 1, 2, 3, 4]}, epochs: 30}``
trains deterministically and caches the weights (safetensors) under ``$ATLBENCH_CACHE/zoo``, so
the second sweep, and every other suite naming the same recipe, reuses them. Image archs are timm
models; text archs (``arch: minilm, layers: 2``, :mod:`atlbench.sources.zoo_text`) are a packaged
Hugging Face architecture with random weights, pre-trained on ``topic_text``.

``epochs: 0`` (and no ``pretrain_on``) is a *random initialisation* as a source: the recipe's
architecture with weights drawn from its seed, cached like any recipe. It stands in the ranking
beside the pre-trained sources, the control every transferability estimator should place last
(Raghu et al. 2019 compare pre-trained with random weights); the scratch baseline, which trains
a fresh initialisation per seed, stays separate.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from atlbench._cache import atomic_write_bytes, atomic_write_text, cache_dir, content_hash
from atlbench._threads import cpu_threads
from atlbench.protocol import TrainingConfig
from atlbench.registry import register_source
from atlbench.sources._base import Encoder, Progress, Source, SourceKind, SourceOptions
from atlbench.sources.timm import TimmEncoder, _known_arch, create_timm, timm_arch_label
from atlbench.sources.zoo_text import TEXT_ARCHS, ZooTextEncoder, create_zoo_text, text_arch_label
from atlbench.targets._base import TaskData
from atlbench.targets.builtin import BuiltinParams, load_builtin, task_modality
from atlbench.train import Classifier, PreparedSplit, fit, predict_logits

log = logging.getLogger(__name__)
ZOO_VERSION = 2  # 2: pre-training data validated as a built-in task (generator version in key)
TEXT_ONLY = ("layers", "max_length")  # left out of the key when unset: image keys stay as they were


class ZooParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str = "test_resnet"
    input_size: int = Field(32, ge=8, le=512)
    # None only with epochs 0: a random initialisation, trained on nothing
    pretrain_on: BuiltinParams | None = None
    epochs: int = Field(20, ge=0, le=1000)
    seed: int = 0
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    # text archs only: keep the first `layers` transformer layers; tokenizer truncation length
    layers: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=4, le=4096)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        return value if value in TEXT_ARCHS else _known_arch(value)

    @field_validator("pretrain_on", mode="before")
    @classmethod
    def _task_shorthand(cls, value: Any, info: ValidationInfo) -> Any:
        """``pretrain_on: textures`` means ``{task: textures}``; images at ``input_size``."""
        value = {"task": value} if isinstance(value, str) else value
        if isinstance(value, dict):
            return {"size": info.data.get("input_size", 32)} | value
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ZooParams:
        """A text arch pre-trains on text, an image arch on images; no task means epochs 0."""
        if self.pretrain_on is None and self.epochs > 0:
            raise ValueError("pretrain_on is required unless epochs is 0 (a random initialisation)")
        if self.pretrain_on is not None and self.epochs == 0:
            raise ValueError("epochs: 0 is a random initialisation; drop pretrain_on")
        if self.pretrain_on is not None and task_modality(self.pretrain_on) != self.modality:
            raise ValueError(
                f"arch {self.arch!r} reads {self.modality} but task "
                f"{self.pretrain_on.task!r} is {task_modality(self.pretrain_on)}"
            )
        if self.modality == "image":
            for name in TEXT_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is for text archs ({', '.join(TEXT_ARCHS)}) only")
        return self

    @property
    def modality(self) -> str:
        return "text" if self.arch in TEXT_ARCHS else "image"


def zoo_key(params: ZooParams) -> str:
    from atlbench.targets._generators import GENERATOR_VERSION

    unset = {name for name in TEXT_ONLY if getattr(params, name) is None}
    dump = params.model_dump(exclude=unset)
    return content_hash({"zoo": dump, "version": ZOO_VERSION, "data": GENERATOR_VERSION})


def zoo_paths(params: ZooParams) -> tuple[Path, Path]:
    root = cache_dir() / "zoo"
    key = zoo_key(params)
    return root / f"{params.arch}-{key}.safetensors", root / f"{params.arch}-{key}.json"


def is_pretrained(params: ZooParams) -> bool:
    """Whether the recipe's weights are in the cache (their checksum is checked on load)."""
    return all(path.exists() for path in zoo_paths(params))


def pretrain_data(params: ZooParams) -> TaskData:
    """The built-in task a zoo recipe pre-trains on, at the recipe's input size."""
    assert params.pretrain_on is not None, "a random initialisation has no pre-training task"
    return load_builtin("zoo-pretrain", params.pretrain_on)


def _create(params: ZooParams, num_classes: int | None) -> TimmEncoder | ZooTextEncoder:
    """The recipe's architecture with random weights (and a source head of ``num_classes``)."""
    if params.modality == "text":
        return create_zoo_text(params.arch, params.layers, params.max_length, num_classes)
    return create_timm(
        params.arch, pretrained=False, num_classes=num_classes or 0, input_size=params.input_size
    )


def _state(
    encoder: TimmEncoder | ZooTextEncoder, head: torch.nn.Module | None
) -> dict[str, torch.Tensor]:
    """The backbone (built without a source head) as ``encoder.*``, the head as ``head.*``."""
    state = {f"encoder.{k}": v.contiguous() for k, v in encoder.model.state_dict().items()}
    if head is not None:
        state |= {f"head.{k}": v.contiguous() for k, v in head.state_dict().items()}
    return state


def pretrain(params: ZooParams, progress: Progress | None = None) -> dict[str, Any]:
    """Train the recipe on its built-in task; write weights and a metadata side-car atomically.

    With ``epochs: 0`` nothing is trained: the seeded random weights are cached as they are.
    """
    from safetensors.torch import load

    weights_path, meta_path = zoo_paths(params)
    if weights_path.exists() and meta_path.exists():
        try:
            blob = weights_path.read_bytes()
            cached: dict[str, Any] = json.loads(meta_path.read_text())
            if cached.get("weights_sha256") != hashlib.sha256(blob).hexdigest():
                raise ValueError("checksum mismatch")
            load(blob)
        except Exception:  # torn, flipped or corrupt entry: recompute, never trust
            log.warning("zoo cache entry %s is corrupt; re-training", weights_path.name)
        else:  # the figure is shown whether the weights were trained now or come from the cache
            if progress is not None:
                name = f"{params.arch}{_trained_on(params)}"
                progress(f"offline zoo model {name} (cached){_figure(cached)}")
            return cached
    if params.pretrain_on is None:
        torch.manual_seed(params.seed)
        encoder = _create(params, None)
        meta: dict[str, Any] = {"recipe": params.model_dump(), "num_classes": 0, "epochs": 0}
        return _write(_state(encoder, None), meta, weights_path, meta_path)
    task = pretrain_data(params)
    torch.manual_seed(params.seed)
    encoder = _create(params, None)
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
    with cpu_threads(device):  # the same weights on any number of cores (atlbench._threads)
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
    meta = {
        "recipe": params.model_dump(),
        "num_classes": task.num_classes,
        "class_names": task.class_names,
        "val_acc": result.best_val_acc,
        "test_acc": test_acc,
        "epochs": result.epochs_run,
        "train_time_s": result.train_time_s,
    }
    if progress is not None:
        progress(f"  best validation accuracy {result.best_val_acc:.3f}, test {test_acc:.3f}")
    return _write(_state(encoder, model.head), meta, weights_path, meta_path)


def _trained_on(params: ZooParams) -> str:
    return "" if params.pretrain_on is None else f" on {params.pretrain_on.task}"


def _figure(meta: dict[str, Any]) -> str:
    """``: validation accuracy 0.950, test 0.949`` for a pre-trained entry, else nothing."""
    if "val_acc" not in meta:
        return ""
    return f": validation accuracy {meta['val_acc']:.3f}, test {meta['test_acc']:.3f}"


def pretrain_summary(params: ZooParams) -> dict[str, Any] | None:
    """What the cached side-car says of the recipe's pre-training (own-task validation and test
    accuracy, epochs, seconds), or None when the weights are not in this machine's cache.

    Reads only: the report shows how well each zoo source learned its own task, which says
    whether it is a real pre-trained model, without ever training one.
    """
    _, meta_path = zoo_paths(params)
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    keys = ("val_acc", "test_acc", "epochs", "train_time_s", "num_classes")
    return {k: meta[k] for k in keys if k in meta}


def _write(
    state: dict[str, torch.Tensor], meta: dict[str, Any], weights_path: Path, meta_path: Path
) -> dict[str, Any]:
    """Weights first, then the side-car naming their checksum (a torn pair is re-trained)."""
    from safetensors.torch import save

    blob = save(state)
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write_bytes(weights_path, blob)
    atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return meta


def build_zoo(params: ZooParams, pretrained: bool) -> Encoder:
    """The zoo model with its pre-training head (so LEEP/NCE see source-class probabilities)."""
    from safetensors.torch import load_file

    if not pretrained:
        return _create(params, None)
    meta = pretrain(params)
    weights_path, _ = zoo_paths(params)
    state = load_file(str(weights_path))
    encoder = _create(params, meta["num_classes"] or None)
    backbone = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    # timm models hold their classifier inside: it is loaded from ``head.*`` below
    encoder.model.load_state_dict(backbone, strict=params.modality == "text")
    source_head = encoder.source_head()
    if head and source_head is not None:
        source_head.load_state_dict(head)
    return encoder


@register_source("zoo")
class ZooSource(SourceKind[ZooParams]):
    """``zoo: {arch, pretrain_on, epochs, ...}``: a small model pre-trained here, offline, once.

    Training is deterministic, so the recipe (with the zoo and generator versions) identifies the
    weights. The pre-training task is known, which enables the domain-gap and forgetting studies;
    a random initialisation (``epochs: 0``) has none.
    """

    Params = ZooParams

    @classmethod
    def resolve(cls, source_id: str, params: ZooParams, options: SourceOptions) -> Source:
        p = params
        return Source(
            id=source_id,
            kind=cls.name,
            modality=p.modality,
            arch=(
                text_arch_label(p.arch, p.layers)
                if p.modality == "text"
                else timm_arch_label(p.arch, p.input_size)
            ),
            fingerprint={"zoo": zoo_key(p)},
            params=p,
            builder=lambda pretrained: build_zoo(p, pretrained),
            pretrain_task=None if p.pretrain_on is None else p.pretrain_on.model_dump(),
            opener=partial(pretrain, p),
            opened=partial(is_pretrained, p),
            reported_accuracy=options.reported_accuracy,
            eval_on=options.eval_on,
        )
