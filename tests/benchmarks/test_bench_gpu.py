"""GPU figures for the training engine; the whole module skips without CUDA.

* Throughput: ``fit`` against the minimal loop anyone would write for a GPU (bf16 autocast,
  channels_last, AdamW, warm-up + cosine, clipping, one validation pass per epoch), same model,
  same data held in host memory and copied per batch on both sides. Goal: at least 95%.
* Clock: :class:`~atlbench._timing.DeviceClock` (CUDA events) against synchronised wall-clock time
  around the same queued work. Goal: within 2%.

Run on a GPU machine: ``pytest tests/benchmarks/test_bench_gpu.py -p no:cacheprovider -s
--benchmark-columns=min,mean,rounds``
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atlbench._timing import DeviceClock
from atlbench.protocol import TrainingConfig
from atlbench.sources.timm import create_timm
from atlbench.targets._base import Split
from atlbench.train import Classifier, PreparedSplit, fit, warmup_cosine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

N_TRAIN, N_VAL, EPOCHS, BATCH, SIZE, CLASSES = 4096, 1024, 3, 128, 96, 10
CUDA = torch.device("cuda")


def make_splits() -> tuple[PreparedSplit, PreparedSplit]:
    """Random uint8 images and labels, prepared once (host memory), shared by both loops."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_TRAIN + N_VAL, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=N_TRAIN + N_VAL)
    encoder = fresh_model().encoder
    train = PreparedSplit(encoder, Split(images[:N_TRAIN], labels[:N_TRAIN]))
    val = PreparedSplit(encoder, Split(images[N_TRAIN:], labels[N_TRAIN:]))
    return train, val


@pytest.fixture(scope="module")
def splits() -> tuple[PreparedSplit, PreparedSplit]:
    return make_splits()


def fresh_model() -> Classifier:
    torch.manual_seed(0)
    encoder = create_timm("resnet18", pretrained=False, num_classes=0, input_size=SIZE)
    return Classifier(encoder, CLASSES)


def bare_loop(model: Classifier, train: PreparedSplit, val: PreparedSplit) -> float:
    model.to(CUDA, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    steps = math.ceil(len(train) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, steps, steps * EPOCHS)
    )
    rng = np.random.default_rng(0)
    acc = 0.0
    for _ in range(EPOCHS):
        model.train()
        for x, y in train.batches(BATCH, rng.permutation(len(train))):
            # uint8 rows travel to the GPU and are converted there, as the engine does
            x = train.to_model(x, CUDA).contiguous(memory_format=torch.channels_last)
            y = y.to(CUDA, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        model.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            logits = torch.cat(
                [
                    model(val.to_model(x, CUDA).contiguous(memory_format=torch.channels_last))
                    .float()
                    .cpu()
                    for x, _ in val.batches(256)
                ]
            )
        acc = float((logits.argmax(1) == val.labels).float().mean())
    torch.cuda.synchronize()
    return acc


def engine(model: Classifier, train: PreparedSplit, val: PreparedSplit) -> float:
    cfg = TrainingConfig(max_epochs=EPOCHS, patience=EPOCHS, batch_size=BATCH, min_epoch_samples=0)
    result = fit(
        model, [{"params": list(model.parameters())}], train, val, cfg, CUDA, lr=1e-3, seed=0
    )
    torch.cuda.synchronize()
    return result.best_val_acc


@pytest.mark.parametrize("loop", [bare_loop, engine], ids=["bare_bf16_channels_last", "atlbench"])
def test_gpu_training_throughput(benchmark, splits, loop) -> None:
    train, val = splits
    benchmark.group = f"GPU training: resnet18 {SIZE}px, {N_TRAIN} examples x {EPOCHS} epochs"
    benchmark.extra_info["samples"] = N_TRAIN * EPOCHS
    acc = benchmark.pedantic(
        lambda: loop(fresh_model(), train, val), rounds=3, warmup_rounds=1, iterations=1
    )
    assert 0.0 <= acc <= 1.0


def event_over_wall_ratios(rounds: int = 7) -> list[float]:
    """CUDA-event seconds over synchronised wall seconds around the same queued matmuls."""
    a = torch.randn(4096, 4096, device=CUDA)

    def work() -> None:
        for _ in range(40):
            torch.mm(a, a)

    work()
    torch.cuda.synchronize()
    ratios = []
    for _ in range(rounds):
        clock = DeviceClock(CUDA)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with clock.section("work"):
            work()  # returns as soon as the kernels are queued
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        ratios.append(clock.seconds("work") / wall)
    return ratios


def test_cuda_event_clock_against_synchronised_wall_clock(record_property) -> None:
    """Queued GPU work timed by events must agree with a synchronise-bracketed wall clock."""
    ratios = event_over_wall_ratios()
    ratio = statistics.median(ratios)
    record_property("event_over_wall_median", ratio)
    print(f"\nCUDA-event seconds / synchronised wall seconds: median {ratio:.4f}, all {ratios}")
    # events bracket only the kernels; the wall clock adds launch and sync latency on top
    assert 0.5 < ratio <= 1.0 + 1e-3
