"""The one training loop every trainable strategy uses.

AdamW/SGD with warm-up + cosine, early stopping on *validation* accuracy (the test split is never
looked at here), gradient clipping, bf16 autocast + channels_last on CUDA, deterministic by seed,
timed on :class:`~atlbench.timing.DeviceClock`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atlbench.sources.base import Encoder, batch_size_of, move_batch
from atlbench.targets.base import Split
from atlbench.timing import DeviceClock, PeakMemory


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
        parts = [encoder.prepare(_slice(split.inputs, i, i + chunk)) for i in range(0, len(split), chunk)]
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

    def batches(self, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[Any, torch.Tensor]]:
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
def predict_logits(model: nn.Module, data: PreparedSplit, device: torch.device, batch_size: int = 256) -> np.ndarray:
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
    """
    torch.manual_seed(cfg.seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    for g in groups:
        g["lr"] = cfg.lr * g.get("lr_mult", 1.0)
        g["initial_lr"] = g["lr"]
    optimizer = build_optimizer(groups, cfg)
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.max_epochs
    warmup_steps = steps_per_epoch * cfg.warmup_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps)
    )
    forward = torch.compile(model) if cfg.compile else model
    clock = DeviceClock(device)
    rng = np.random.default_rng(cfg.seed)
    best = (-1.0, -math.inf)
    best_epoch, bad_epochs, samples = -1, 0, 0
    history: list[float] = []
    epoch_ends: list[float] = []
    best_state: dict[str, torch.Tensor] = {}
    epoch = 0
    for epoch in range(cfg.max_epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        order = rng.permutation(len(train))
        with clock.section("train"):
            for batch, labels in train.batches(cfg.batch_size, order):
                batch, labels = _to_device(batch, device), labels.to(device, non_blocking=True)
                with _autocast(device):
                    loss = F.cross_entropy(forward(batch).float(), labels)
                    if extra_loss is not None:
                        loss = loss + extra_loss(model)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                samples += batch_size_of(batch)
        epoch_ends.append(clock.seconds("train"))
        logits = predict_logits(model, val, device)
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
        train_samples_per_s=samples / train_time if train_time > 0 else float("nan"),
        samples_seen=samples,
        best_state=best_state,
    )


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of a model's weights (to restore the same init for every grid point)."""
    return copy.deepcopy(model.state_dict())


__all__ = [
    "Classifier",
    "FitResult",
    "PeakMemory",
    "PreparedSplit",
    "TrainConfig",
    "fit",
    "predict_logits",
    "snapshot",
    "warmup_cosine",
]
