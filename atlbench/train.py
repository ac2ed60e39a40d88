"""The one training loop every trainable strategy uses.

AdamW/SGD with warm-up + cosine, early stopping on *validation* accuracy (the test split is never
looked at here), gradient clipping, bf16 autocast + channels_last on CUDA, deterministic by seed,
timed on :class:`~atlbench.timing.DeviceClock`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atlbench.sources.base import Encoder, batch_size_of, move_batch
from atlbench.targets.base import Split
from atlbench.timing import DeviceClock


class Classifier(nn.Module):
    """An encoder plus a fresh linear head for the target classes."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.encoder(batch))


class PreparedSplit:
    """A split turned into model-ready tensors once, then sliced into batches cheaply."""

    def __init__(self, encoder: Encoder, split: Split, chunk: int = 512) -> None:
        self.labels = torch.as_tensor(split.labels, dtype=torch.long)
        parts = [
            encoder.prepare(_slice(split.inputs, i, i + chunk)) for i in range(0, len(split), chunk)
        ]
        if isinstance(parts[0], torch.Tensor):
            self.data: Any = torch.cat(parts)
        else:  # tokenised text: pad chunks to a common length
            width = max(p["input_ids"].shape[1] for p in parts)
            self.data = {
                k: torch.cat([F.pad(p[k], (0, width - p[k].shape[1])) for p in parts])
                for k in parts[0]
            }

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor) -> Any:
        if isinstance(self.data, torch.Tensor):
            return self.data[index]
        out = {k: v[index] for k, v in self.data.items()}
        if "attention_mask" in out:  # trim padding no example in this batch uses
            width = int(out["attention_mask"].sum(1).max().item())
            out = {k: v[:, : max(width, 1)] for k, v in out.items()}
        return out

    def batches(
        self, batch_size: int, order: np.ndarray | None = None
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        index = torch.as_tensor(order if order is not None else np.arange(len(self)))
        for start in range(0, len(index), batch_size):
            idx = index[start : start + batch_size]
            yield self.batch(idx), self.labels[idx]


def _slice(inputs: Any, start: int, stop: int) -> Any:
    return inputs[start:stop]


@dataclass
class TrainConfig:
    lr: float
    max_epochs: int = 60
    patience: int = 8
    batch_size: int = 32
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    grad_clip: float | None = 1.0
    optimizer: str = "adamw"
    seed: int = 0
    compile: bool = False
    # Forward/backward in chunks of this size and accumulate (same effective batch). None = whole
    # batch; set automatically to half the batch after a CUDA out-of-memory error.
    micro_batch: int | None = None
    eval_batch_size: int = 256  # validation forward passes; halved with the micro-batch on OOM
    # An "epoch" passes over the train split as many times as it takes to see this many samples,
    # so patience and warm-up mean the same number of optimiser steps for 25 labels as for 2,500
    # (otherwise early stopping ends a 5-labels-per-class run after a handful of steps).
    min_epoch_samples: int = 0


@dataclass
class FitResult:
    """What one training run produced: the best (by validation) weights and its clock."""

    best_val_acc: float
    best_epoch: int
    epochs_run: int
    val_history: list[float]
    train_time_s: float
    epoch_end_times: list[float]
    time_to_best_s: float
    time_to_90pct_s: float
    train_samples_per_s: float
    samples_seen: int
    best_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    warmup_time_s: float = 0.0  # the first epoch (allocator, cuDNN autotune, compile)
    first_step_s: float = 0.0
    compile_time_s: float = 0.0  # first step minus a steady step; 0 unless compiled
    micro_batch: int | None = None  # the micro-batch actually used (after any OOM retry)
    oom_retries: int = 0


ParamGroups = list[dict[str, Any]]
EpochCallback = Callable[[int, int, float], None]


def build_optimizer(groups: ParamGroups, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up, then cosine decay to zero at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def predict_logits(
    model: nn.Module, data: PreparedSplit, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    model.eval()
    outs = []
    with _autocast(device):
        for batch, _ in data.batches(batch_size):
            outs.append(model(_to_device(batch, device)).float().cpu())
    return torch.cat(outs).numpy()


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _to_device(batch: Any, device: torch.device) -> Any:
    batch = move_batch(batch, device)
    if device.type == "cuda" and isinstance(batch, torch.Tensor) and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def _rows(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    return {k: v[start:stop] for k, v in batch.items()}


def accumulate_gradients(
    forward: Callable[[Any], torch.Tensor],
    batch: Any,
    labels: torch.Tensor,
    device: torch.device,
    micro_batch: int | None = None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
) -> float:
    """Backpropagate the mean cross-entropy of ``batch`` in micro-batches; return the loss.

    Each chunk's loss is weighted by its share of the batch, so the summed gradients equal the
    full-batch gradient (exactly, up to float rounding, for models without batch statistics;
    BatchNorm sees smaller batches). A regulariser is added once, not once per chunk.
    """
    n = int(labels.shape[0])
    chunk = n if not micro_batch or micro_batch >= n else micro_batch
    total = 0.0
    for start in range(0, n, chunk):
        y = labels[start : start + chunk]
        with _autocast(device):
            loss = F.cross_entropy(forward(_rows(batch, start, start + chunk)).float(), y)
            loss = loss * (len(y) / n)
            if extra_loss is not None and start == 0:
                loss = loss + extra_loss()
        loss.backward()
        total += float(loss.detach())
    return total


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError)


def fit(
    model: nn.Module,
    groups: ParamGroups,
    train: PreparedSplit,
    val: PreparedSplit,
    cfg: TrainConfig,
    device: torch.device,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
) -> FitResult:
    """Train until validation accuracy stops improving for ``patience`` epochs.

    ``groups`` are optimizer parameter groups; a group's ``lr_mult`` scales the base learning rate
    (lower rates for pre-trained layers). ``extra_loss`` adds a regulariser (e.g. L2-SP).
    ``on_epoch_start(epoch)`` may change which parameters train (gradual unfreezing); it must set
    that state from ``epoch`` alone, because an out-of-memory retry replays epochs from 0.

    On a CUDA out-of-memory error the run restarts once from the same initial weights with half
    the micro-batch and gradient accumulation (same effective batch); a second OOM propagates.
    """
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    hooks = (extra_loss, on_epoch, on_epoch_start)
    try:
        return _fit_once(model, groups, train, val, cfg, device, *hooks)
    except Exception as err:
        if not _is_oom(err):
            raise
        current = cfg.micro_batch or cfg.batch_size
        if current < 2:
            raise
        del err  # drop the traceback's references to activations before retrying
    _release_memory(model, device)
    model.load_state_dict(initial)
    retry = dataclasses.replace(
        cfg, micro_batch=max(1, current // 2), eval_batch_size=max(1, cfg.eval_batch_size // 2)
    )
    result = _fit_once(model, groups, train, val, retry, device, *hooks)
    result.oom_retries = 1
    return result


def _release_memory(model: nn.Module, device: torch.device) -> None:
    for prm in model.parameters():
        prm.grad = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fit_once(
    model: nn.Module,
    groups: ParamGroups,
    train: PreparedSplit,
    val: PreparedSplit,
    cfg: TrainConfig,
    device: torch.device,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None,
    on_epoch: EpochCallback | None,
    on_epoch_start: Callable[[int], None] | None,
) -> FitResult:
    torch.manual_seed(cfg.seed)
    for g in groups:
        g["lr"] = cfg.lr * g.get("lr_mult", 1.0)
        g["initial_lr"] = g["lr"]
    optimizer = build_optimizer(groups, cfg)
    passes = max(1, math.ceil(cfg.min_epoch_samples / max(1, len(train))))
    steps_per_epoch = max(1, math.ceil(passes * len(train) / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.max_epochs
    warmup_steps = steps_per_epoch * cfg.warmup_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps)
    )
    forward = torch.compile(model) if cfg.compile else model
    regulariser = (lambda: extra_loss(model)) if extra_loss is not None else None
    clock = DeviceClock(device)
    rng = np.random.default_rng(cfg.seed)
    best = (-1.0, -math.inf)
    best_epoch, bad_epochs, samples, first_epoch_samples = -1, 0, 0, 0
    history: list[float] = []
    epoch_ends: list[float] = []
    best_state: dict[str, torch.Tensor] = {}
    epoch = 0
    for epoch in range(cfg.max_epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        order = np.concatenate([rng.permutation(len(train)) for _ in range(passes)])
        with clock.section("train"):
            for step, (batch, labels) in enumerate(train.batches(cfg.batch_size, order)):
                timer = clock.section("first_step") if epoch == 0 and step == 0 else nullcontext()
                with timer:
                    batch = _to_device(batch, device)
                    labels = labels.to(device, non_blocking=True)
                    optimizer.zero_grad(set_to_none=True)
                    accumulate_gradients(
                        forward, batch, labels, device, cfg.micro_batch, regulariser
                    )
                    if cfg.grad_clip:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                samples += batch_size_of(batch)
        epoch_ends.append(clock.seconds("train"))  # one device sync per epoch, not per step
        if epoch == 0:
            first_epoch_samples = samples
        logits = predict_logits(model, val, device, cfg.eval_batch_size)
        val_acc = float((logits.argmax(1) == val.labels.numpy()).mean())
        val_loss = float(F.cross_entropy(torch.from_numpy(logits), val.labels).item())
        history.append(val_acc)
        if (val_acc, -val_loss) > best:
            best, best_epoch, bad_epochs = (val_acc, -val_loss), epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if on_epoch is not None:
            on_epoch(epoch, cfg.max_epochs, val_acc)
        if bad_epochs >= cfg.patience:
            break
    train_time = clock.seconds("train")
    first_step = clock.seconds("first_step")
    warmup = epoch_ends[0]
    # Steady-state throughput: on CUDA (and whenever compiled) the first epoch pays for allocator
    # growth, cuDNN autotuning and compilation, so it is reported as warm-up, not throughput.
    if (device.type == "cuda" or cfg.compile) and len(epoch_ends) > 1:
        rate = (samples - first_epoch_samples) / max(train_time - warmup, 1e-12)
    else:
        rate = samples / train_time if train_time > 0 else float("nan")
    compile_time = 0.0
    if cfg.compile:
        steady_step = (train_time - first_step) / max(1, len(epoch_ends) * steps_per_epoch - 1)
        compile_time = max(0.0, first_step - steady_step)
    target = 0.9 * best[0]
    first_90 = next(i for i, acc in enumerate(history) if acc >= target)
    return FitResult(
        best_val_acc=best[0],
        best_epoch=best_epoch,
        epochs_run=epoch + 1,
        val_history=history,
        train_time_s=train_time,
        epoch_end_times=epoch_ends,
        time_to_best_s=epoch_ends[best_epoch],
        time_to_90pct_s=epoch_ends[first_90],
        train_samples_per_s=rate,
        samples_seen=samples,
        best_state=best_state,
        warmup_time_s=warmup,
        first_step_s=first_step,
        compile_time_s=compile_time,
        micro_batch=cfg.micro_batch,
    )


__all__ = [
    "Classifier",
    "FitResult",
    "PreparedSplit",
    "TrainConfig",
    "accumulate_gradients",
    "fit",
    "predict_logits",
    "warmup_cosine",
]
