"""The one training loop every trainable strategy uses.

AdamW/SGD with warm-up + cosine, early stopping on *validation* accuracy (the test split is never
looked at here; never inside the ``min_epochs`` burn-in), gradient clipping, optional standard
augmentation, bf16 autocast on CUDA, channels_last image batches, fused AdamW, deterministic by
seed, timed on :class:`~atlbench._timing.DeviceClock`.

A :class:`TrainingRun` can stop at an epoch boundary and continue later, which is what successive
halving needs: the learning-rate schedule is defined over ``max_epochs`` from the start, so a run
continued to a later rung is exactly the run that would have gone there uninterrupted.
"""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atlbench._timing import DeviceClock
from atlbench.datapipe import (
    BatchStream,
    ImageRows,
    ImageTransform,
    image_batches,
    is_compact_images,
)
from atlbench.protocol import TrainingConfig
from atlbench.sources._base import Encoder, batch_size_of, move_batch
from atlbench.targets._base import Split


class Classifier(nn.Module):
    """An encoder plus a fresh linear head for the target classes."""

    def __init__(self, encoder: Encoder, num_classes: int, feature_dim: int | None = None):
        super().__init__()
        self.encoder: Encoder = encoder
        dim = feature_dim if feature_dim is not None else int(encoder.feature_dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.encoder(batch))


# float input per inference batch on a CPU: 53 images at 224 px, the whole batch below ~100 px
CPU_INFERENCE_INPUT_BYTES = 32 * 2**20


class PreparedSplit:
    """A split ready for the model, kept compact: image rows stay uint8 (in memory or in the
    decoded-image cache on disk) and the encoder's :class:`~atlbench.datapipe.ImageTransform`
    converts each batch on the device (:meth:`to_model`); anything else (tokenised text,
    cached activations, images for an encoder without a per-batch step) is prepared once.

    :meth:`batches` yields compact CPU batches in the caller's order, streamed by a
    ``DataLoader`` when the split is large and on disk; :meth:`to_model` finishes one.
    """

    def __init__(self, encoder: Encoder, split: Split, chunk: int = 512) -> None:
        self.labels = torch.as_tensor(split.labels, dtype=torch.long)
        transform = encoder.image_transform() if is_compact_images(split.inputs) else None
        self.transform: ImageTransform | None = transform
        self._streams: dict[bool, BatchStream] = {}  # DataLoaders kept between passes
        if transform is not None:
            self.data: Any = ImageRows.of(split.inputs)
            return
        parts = [encoder.prepare(split.inputs[i : i + chunk]) for i in range(0, len(split), chunk)]
        self.data = concat_batches(parts) if parts else torch.empty(0)

    @classmethod
    def from_tensors(
        cls,
        data: Any,
        labels: np.ndarray | torch.Tensor,
        transform: ImageTransform | None = None,
    ) -> PreparedSplit:
        """A split of already prepared data (cached activations, tokenised text), or of compact
        image rows with the ``transform`` that finishes their batches."""
        out = cls.__new__(cls)
        out.data = ImageRows.of(data) if transform is not None else data
        out.labels = torch.as_tensor(labels, dtype=torch.long)
        out.transform = transform
        out._streams = {}
        return out

    def __len__(self) -> int:
        return len(self.labels)

    def raw(self, index: torch.Tensor) -> Any:
        """Rows ``index`` as they travel to the device: uint8 images, or prepared tensors."""
        if isinstance(self.data, ImageRows):
            return self.data.tensor(index)
        if isinstance(self.data, torch.Tensor):
            return self.data[index]
        out = {k: v[index] for k, v in self.data.items()}
        if "attention_mask" in out:  # trim padding no example in this batch uses
            width = int(out["attention_mask"].sum(1).max().item())
            out = {k: (v[:, : max(width, 1)] if v.dim() >= 2 else v) for k, v in out.items()}
        return out

    def to_model(self, batch: Any, device: torch.device) -> Any:
        """A :meth:`raw` batch moved to ``device`` and, for images, converted there."""
        if self.transform is None:
            return to_device(batch, device)
        return to_device(self.transform(move_batch(batch, device)), device)

    def batch(self, index: torch.Tensor) -> Any:
        """Rows ``index``, model-ready, on the CPU."""
        raw = self.raw(index)
        return raw if self.transform is None else self.transform(raw)

    def device_batch(self, index: torch.Tensor, device: torch.device) -> Any:
        """Rows ``index``, model-ready, on ``device`` (converted there)."""
        return self.to_model(self.raw(index), device)

    def inference_batch(self, batch_size: int, device: torch.device) -> int:
        """``batch_size``, capped on a CPU so one batch of model-ready images holds at most
        :data:`CPU_INFERENCE_INPUT_BYTES` of float input: a forward pass keeps activations of
        the whole batch alive, which at 224 px and 256 images is over a GiB of host memory.
        Small images (24-96 px) keep the full batch, so their results do not change; on a
        GPU the activations live on the device and the batch is not capped."""
        if self.transform is None or device.type != "cpu":
            return batch_size
        per_row = 4 * 3 * self.transform.size * self.transform.size
        return max(1, min(batch_size, CPU_INFERENCE_INPUT_BYTES // per_row))

    def length_order(self) -> np.ndarray | None:
        """Rows sorted by token count (text), so evaluation batches carry little padding."""
        if isinstance(self.data, dict) and "attention_mask" in self.data:
            return np.argsort(self.data["attention_mask"].sum(1).numpy(), kind="stable")
        return None

    def batches(
        self, batch_size: int, order: np.ndarray | None = None, pin: bool = False
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """``(raw batch, labels)`` in ``order``; ``pin``: page-locked, for a CUDA device."""
        index = torch.as_tensor(order if order is not None else np.arange(len(self)))
        chunks = [index[start : start + batch_size] for start in range(0, len(index), batch_size)]
        if isinstance(self.data, ImageRows):
            images = image_batches(self.data, [c.numpy() for c in chunks], pin, self._streams)
            for idx, batch in zip(chunks, images, strict=True):
                yield batch, self.labels[idx]
            return
        for idx in chunks:
            yield self.raw(idx), self.labels[idx]


def concat_batches(parts: list[Any]) -> Any:
    """Concatenate prepared chunks; dicts of token tensors are right-padded to a common width."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    width = max(p["attention_mask"].shape[1] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[1])) if t.dim() == 2 else t

    return {k: torch.cat([pad(p[k]) for p in parts]) for k in parts[0]}


@dataclass
class FitResult:
    """What one training run produced: the best (by validation) weights and its clock."""

    best_val_acc: float
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    val_history: list[float]
    train_history: list[float]  # training-batch accuracy per epoch (overfitting diagnostics)
    train_time_s: float
    epoch_end_times: list[float]
    time_to_best_s: float
    time_to_90pct_s: float
    train_samples_per_s: float
    samples_seen: int
    stopped_early: bool
    best_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    warmup_time_s: float = 0.0  # the first epoch (allocator, cuDNN autotune, compile)
    first_step_s: float = 0.0
    compile_time_s: float = 0.0  # first step minus a steady step; 0 unless compiled
    micro_batch: int | None = None  # the micro-batch actually used (after any OOM retry)
    oom_retries: int = 0
    data_wait_s: float = 0.0  # of train_time_s, spent waiting for the next batch's data


ParamGroups = list[dict[str, Any]]
EpochCallback = Callable[[int, int, float], None]


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
    order = data.length_order()  # text: batches of similar length (exact, far less padding)
    with autocast(device):
        rows = data.inference_batch(batch_size, device)
        for batch, _ in data.batches(rows, order, pin=device.type == "cuda"):
            outs.append(model(data.to_model(batch, device)).float().cpu())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    logits = torch.cat(outs).numpy()
    if order is None:
        return logits
    restored = np.empty_like(logits)
    restored[order] = logits
    return restored


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; a no-op context on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch; 4-D image tensors go channels_last (faster convolutions on CUDA and on
    CPU alike: 15-20% per step for test_resnet here)."""
    batch = move_batch(batch, device)
    if isinstance(batch, torch.Tensor) and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def make_optimizer(
    groups: ParamGroups, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW (fused kernels where torch has them for these parameters) or SGD with momentum."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.dtype == torch.float32 for p in params)
    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without fused kernels
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def augment_images(batch: Any, gen: torch.Generator, pad: int = 4) -> Any:
    """Standard augmentation for image tensors: reflect-pad, random crop, random flip.

    The CIFAR recipe of He et al. (2016), used by He et al. (2019) for from-scratch training.
    Anything that is not a 4-D tensor (tokenised text) is returned unchanged.
    """
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        return batch
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    flip = (torch.rand(n, generator=gen) < 0.5).to(batch.device)  # drawn on the CPU generator
    out = torch.stack(
        [padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx, strict=True))]
    )
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except that frozen parts stay in eval mode.

    A module whose parameters are all frozen is put in eval mode with everything below it, so a
    frozen BatchNorm keeps its running statistics and a frozen block's dropout is off: "frozen"
    means the block computes exactly what it computed before training (which is also what makes
    caching a frozen prefix's outputs exact).
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate the mean cross-entropy of ``batch`` in micro-batches.

    Each chunk's loss is weighted by its share of the batch, so the summed gradients equal the
    full-batch gradient (exactly, up to float rounding, for models without batch statistics;
    BatchNorm sees smaller batches). A regulariser is added once, not once per chunk. Returns the
    loss and the number of correctly classified examples of the batch as 0-d tensors on the
    device: reading them (``float``, ``int``) waits for the GPU, so the engine sums them there
    and reads once per epoch, never per step.
    """
    n = int(labels.shape[0])
    chunk = n if not micro_batch or micro_batch >= n else micro_batch
    total = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, n, chunk):
        y = labels[start : start + chunk]
        with autocast(device):
            logits = forward(_rows(batch, start, start + chunk)).float()
            loss = F.cross_entropy(logits, y) * (len(y) / n)
            if extra_loss is not None and start == 0:
                loss = loss + extra_loss()
        loss.backward()
        total += loss.detach()
        correct += (logits.detach().argmax(1) == y).sum()
    return total, correct


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def snapshot_changes(model: nn.Module, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state, sharing every tensor still equal to ``base`` (its start weights).

    A run keeps a snapshot for its best epoch and one while suspended; a frozen backbone is most
    of the model and never changes, so copying it for every trial of a stage multiplied memory
    by the trial count. ``base`` is never written to, so sharing its tensors is safe."""
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        b = base.get(k)
        same = (
            b is not None
            and b.shape == v.shape
            and b.dtype == v.dtype
            and b.device == v.device
            and torch.equal(b, v)
        )
        out[k] = b if b is not None and same else v.detach().clone()
    return out


@dataclass
class RowSparse:
    """A 2-D-or-more tensor kept as its non-zero rows: a paused run's Adam moments for an
    embedding table, where the rows of tokens the target never uses stay exactly zero."""

    shape: torch.Size
    rows: torch.Tensor  # indices of the non-zero rows
    values: torch.Tensor

    @classmethod
    def pack(cls, t: torch.Tensor) -> RowSparse | torch.Tensor:
        if t.dim() < 2 or t.numel() < 1 << 16:
            return t
        flat = t.reshape(t.shape[0], -1)
        rows = flat.ne(0).any(1).nonzero().squeeze(1)
        if len(rows) > t.shape[0] // 2:
            return t
        return cls(t.shape, rows, flat[rows].clone())

    def unpack(self) -> torch.Tensor:
        out = self.values.new_zeros((self.shape[0], self.values.shape[1]))
        out[self.rows] = self.values
        return out.reshape(self.shape)


def _pack_optimizer(optimizer: torch.optim.Optimizer, unpack: bool = False) -> None:
    """Pack (or unpack) every state tensor of ``optimizer`` in place; exact both ways."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if unpack and isinstance(value, RowSparse):
                state[key] = value.unpack()
            elif not unpack and isinstance(value, torch.Tensor):
                state[key] = RowSparse.pack(value)


def selection_score(val_acc: float, val_loss: float) -> tuple[float, float]:
    """How an epoch and a trial are judged on the hold-out: accuracy, lower loss breaking ties.

    A hold-out of a few images saturates accuracy (issue #23: 1.0 in 73% of fine-tune cells),
    so ties are the rule and the continuous mean cross-entropy decides them, never trial order.
    Loss alone was measured and lost (tests/benchmarks/selection_noise.py, 10 seeds): a scratch
    run's loss sits at chance (ln K) for its first epochs, so loss-based early stopping kept
    epoch 1 and the retrain collapsed. A non-finite loss ranks below every finite one.
    """
    return (val_acc, -val_loss if math.isfinite(val_loss) else -math.inf)


class TrainingRun:
    """One training run of a model under ``cfg`` at one learning rate, resumable by epoch.

    ``groups`` are optimizer parameter groups; a group's ``lr_mult`` scales the base learning rate
    (lower rates for pre-trained layers). ``extra_loss(model)`` adds a regulariser (L2-SP, CORAL).
    ``on_epoch_start(epoch)`` may change which parameters train (gradual unfreezing); it must set
    that state from ``epoch`` alone, because an out-of-memory retry replays epochs from 0. With
    ``val=None`` there is no early stopping and the final weights are the result (a retrain).

    Several runs may share one model (the trials of a successive-halving rung): :meth:`suspend`
    keeps this run's weights aside and :meth:`resume` puts them back. ``keep_best=False`` skips
    the best epoch's weights (a selection that is retrained needs only its epoch count). On a
    CUDA out-of-memory error the run restarts once from its initial weights with half the
    micro-batch and gradient accumulation (same effective batch), replaying to where it was; a
    second OOM propagates.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: ParamGroups,
        train: PreparedSplit,
        val: PreparedSplit | None,
        cfg: TrainingConfig,
        device: torch.device,
        *,
        lr: float,
        seed: int,
        weight_decay: float | None = None,
        extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
        on_epoch: EpochCallback | None = None,
        micro_batch: int | None = None,
        initial: dict[str, torch.Tensor] | None = None,
        keep_best: bool = True,
    ) -> None:
        self.model, self.groups, self.train, self.val = model, groups, train, val
        self.keep_best = keep_best  # False: only the best epoch's number and score are needed
        self.cfg, self.device, self.lr, self.seed = cfg, device, lr, seed
        self.weight_decay = cfg.weight_decay if weight_decay is None else weight_decay
        self.extra_loss, self.on_epoch_start, self.on_epoch = extra_loss, on_epoch_start, on_epoch
        model.to(device)
        model.to(memory_format=torch.channels_last)  # a no-op for modules without 4-D weights
        # the weights an out-of-memory retry restarts from (shared by the trials of a stage)
        self._initial = initial if initial is not None else _snapshot(model)
        self._saved: dict[str, torch.Tensor] | None = None
        self.oom_retries = 0
        self._reset(micro_batch)

    # -- state ------------------------------------------------------------------------------
    def _reset(self, micro_batch: int | None) -> None:
        cfg = self.cfg
        torch.manual_seed(self.seed)
        for g in self.groups:
            g["lr"] = self.lr * g.get("lr_mult", 1.0)
            g["initial_lr"] = g["lr"]
        self.optimizer = make_optimizer(self.groups, cfg.optimizer, self.lr, self.weight_decay)
        self.passes = max(1, math.ceil(cfg.min_epoch_samples / max(1, len(self.train))))
        self.steps_per_epoch = max(1, math.ceil(self.passes * len(self.train) / cfg.batch_size))
        total, warmup = (
            self.steps_per_epoch * cfg.max_epochs,
            self.steps_per_epoch * cfg.warmup_epochs,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup, total)
        )
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.clock = DeviceClock(self.device)
        self.rng = np.random.default_rng(self.seed)
        self.aug = torch.Generator().manual_seed(self.seed + 7_777)
        self.micro_batch = micro_batch
        self.best = (-math.inf, -math.inf)  # the best epoch's selection_score
        self.best_acc, self.best_loss = float("nan"), float("nan")
        self.best_epoch, self.bad_epochs, self.samples, self.first_epoch_samples = -1, 0, 0, 0
        self.epoch = 0
        self.stopped = False
        self.history: list[float] = []
        self.train_history: list[float] = []
        self.epoch_ends: list[float] = []
        self.best_state: dict[str, torch.Tensor] = {}

    @property
    def score(self) -> tuple[float, float]:
        """The best epoch's :func:`selection_score` so far: how successive halving ranks runs."""
        return self.best

    @property
    def finished(self) -> bool:
        return self.stopped or self.epoch >= self.cfg.max_epochs

    def suspend(self) -> None:
        """Keep this run's current weights aside (the model object may train another run), and
        its optimizer's mostly-zero moments as their non-zero rows (:class:`RowSparse`)."""
        if self.val is not None and self.best_epoch == self.epoch - 1 and self.best_state:
            self._saved = self.best_state  # the last epoch was the best: same weights
        else:
            self._saved = snapshot_changes(self.model, self._initial)
        _pack_optimizer(self.optimizer)

    def resume(self) -> None:
        if self._saved is not None:
            self.model.load_state_dict(self._saved)
            self._saved = None
            _pack_optimizer(self.optimizer, unpack=True)

    # -- training ---------------------------------------------------------------------------
    def advance(self, until_epoch: int) -> TrainingRun:
        """Train epochs ``[epoch, until_epoch)`` unless early stopping ends the run first."""
        until = min(until_epoch, self.cfg.max_epochs)
        target = until
        while True:
            try:
                while self.epoch < target and not self.stopped:
                    self._epoch()
                return self
            except Exception as err:
                if not _is_oom(err) or self.oom_retries:
                    raise
                current = self.micro_batch or self.cfg.batch_size
                if current < 2:
                    raise
                del err  # drop the traceback's references to activations before retrying
            target = max(self.epoch, until)
            self._release()
            self.model.load_state_dict(self._initial)
            self._reset(max(1, current // 2))
            self.oom_retries = 1

    def _release(self) -> None:
        for prm in self.model.parameters():
            prm.grad = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _epoch(self) -> None:
        cfg, model, device = self.cfg, self.model, self.device
        if self.on_epoch_start is not None:
            self.on_epoch_start(self.epoch)
        train_mode(model)
        order = np.concatenate([self.rng.permutation(len(self.train)) for _ in range(self.passes)])
        if len(order) > 1 and len(order) % cfg.batch_size == 1:
            # a last batch of one example: batch norm cannot train on it (5 labels at 2 per class
            # minus the hold-out, 13 passes, batches of 32), and one example is a noisy step
            order = order[:-1]
        extra_loss = self.extra_loss
        regulariser = (lambda: extra_loss(model)) if extra_loss is not None else None
        correct: int | torch.Tensor = 0  # a device tensor once counted: read once per epoch
        seen = 0
        batches = iter(self.train.batches(cfg.batch_size, order, pin=device.type == "cuda"))
        with self.clock.section("train"):
            for step in itertools.count():
                with self.clock.section("data_wait"):  # reading the next batch, not computing
                    item = next(batches, None)
                if item is None:
                    break
                batch, labels = item
                first = self.epoch == 0 and step == 0 and not self.epoch_ends
                with self.clock.section("first_step") if first else nullcontext():
                    batch = self.train.to_model(batch, device)
                    if cfg.augment == "standard":
                        batch = augment_images(batch, self.aug)
                    labels = labels.to(device, non_blocking=True)
                    self.optimizer.zero_grad(set_to_none=True)
                    _, ok = accumulate_gradients(
                        self.forward, batch, labels, device, self.micro_batch, regulariser
                    )
                    if cfg.grad_clip:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                correct += ok
                seen += batch_size_of(batch)
        self.samples += seen
        self.epoch_ends.append(self.clock.seconds("train"))  # one device sync per epoch
        if self.epoch == 0:
            self.first_epoch_samples = self.samples
        self.train_history.append(int(correct) / max(1, seen))  # the epoch's one read of it
        self._validate()
        self.epoch += 1

    def _validate(self) -> None:
        if self.val is None:  # a retrain: the last epoch is the result
            self.history.append(float("nan"))
            self.best_epoch = self.epoch
            return
        logits = predict_logits(self.model, self.val, self.device, self.cfg.eval_batch_size)
        val_acc = float((logits.argmax(1) == self.val.labels.numpy()).mean())
        val_loss = float(F.cross_entropy(torch.from_numpy(logits), self.val.labels).item())
        self.history.append(val_acc)
        score = selection_score(val_acc, val_loss)
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, self.epoch, 0
            self.best_acc, self.best_loss = val_acc, val_loss
            if self.keep_best:
                self.best_state = snapshot_changes(self.model, self._initial)
        else:
            self.bad_epochs += 1
        if self.on_epoch is not None:
            self.on_epoch(self.epoch, self.cfg.max_epochs, val_acc)
        if self.bad_epochs >= self.cfg.patience and self.epoch + 1 >= self.cfg.min_epochs:
            self.stopped = True  # never inside the burn-in: see TrainingConfig.min_epochs

    def result(self) -> FitResult:
        """The run so far: clocks, histories and the best (or, without validation, last) weights."""
        cfg = self.cfg
        if self.val is None:
            self.best_state = snapshot_changes(self.model, self._initial)
        train_time = self.clock.seconds("train")
        first_step = self.clock.seconds("first_step")
        ends = self.epoch_ends
        warmup = ends[0] if ends else 0.0
        # Steady-state throughput: on CUDA (and whenever compiled) the first epoch pays for
        # allocator growth, cuDNN autotuning and compilation, so it is warm-up, not throughput.
        if (self.device.type == "cuda" or cfg.compile) and len(ends) > 1:
            rate = (self.samples - self.first_epoch_samples) / max(train_time - warmup, 1e-12)
        else:
            rate = self.samples / train_time if train_time > 0 else float("nan")
        compile_time = 0.0
        if cfg.compile and ends:
            steady = (train_time - first_step) / max(1, len(ends) * self.steps_per_epoch - 1)
            compile_time = max(0.0, first_step - steady)
        valid = [a for a in self.history if a == a]
        best_acc = self.best_acc if self.val is not None else float("nan")
        first_90 = next((i for i, a in enumerate(self.history) if a >= 0.9 * best_acc), -1)
        return FitResult(
            best_val_acc=best_acc,
            best_val_loss=self.best_loss if self.val is not None else float("nan"),
            best_epoch=self.best_epoch,
            epochs_run=self.epoch,
            val_history=list(self.history) if valid else [],
            train_history=list(self.train_history),
            train_time_s=train_time,
            epoch_end_times=list(ends),
            time_to_best_s=ends[self.best_epoch] if ends and self.best_epoch >= 0 else 0.0,
            time_to_90pct_s=ends[first_90] if ends and first_90 >= 0 else float("nan"),
            train_samples_per_s=rate,
            samples_seen=self.samples,
            stopped_early=self.stopped,
            best_state=self.best_state,
            warmup_time_s=warmup,
            first_step_s=first_step,
            compile_time_s=compile_time,
            micro_batch=self.micro_batch,
            oom_retries=self.oom_retries,
            data_wait_s=self.clock.seconds("data_wait"),
        )


def fit(
    model: nn.Module,
    groups: ParamGroups,
    train: PreparedSplit,
    val: PreparedSplit | None,
    cfg: TrainingConfig,
    device: torch.device,
    *,
    lr: float,
    seed: int = 0,
    epochs: int | None = None,
    **kwargs: Any,
) -> FitResult:
    """One uninterrupted :class:`TrainingRun` to ``epochs`` (default ``cfg.max_epochs``)."""
    run = TrainingRun(model, groups, train, val, cfg, device, lr=lr, seed=seed, **kwargs)
    return run.advance(epochs or cfg.max_epochs).result()


__all__ = [
    "Classifier",
    "FitResult",
    "PreparedSplit",
    "TrainingRun",
    "accumulate_gradients",
    "augment_images",
    "autocast",
    "fit",
    "predict_logits",
    "selection_score",
    "to_device",
    "train_mode",
    "warmup_cosine",
]
