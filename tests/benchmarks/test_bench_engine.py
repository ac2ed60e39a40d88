"""The training engine's overhead against a bare PyTorch loop doing the same work.

Both sides train the same ``test_resnet`` classifier on the same 512 examples for 3 epochs with
AdamW, warm-up + cosine, gradient clipping and one validation pass per epoch; only the engine adds
its clock, best-state snapshots, early-stopping bookkeeping and progress hooks. Goal: at most 5%
on CPU. Run: ``pytest tests/benchmarks/test_bench_engine.py --benchmark-columns=min,mean,rounds``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atlbench.protocol import TrainingConfig
from atlbench.sources.timm import create_timm
from atlbench.targets.base import Split
from atlbench.train import Classifier, PreparedSplit, fit, warmup_cosine

N_TRAIN, N_VAL, EPOCHS, BATCH = 512, 128, 3, 32


def make_data() -> tuple[Split, Split]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_TRAIN + N_VAL, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, size=N_TRAIN + N_VAL)
    return Split(images[:N_TRAIN], labels[:N_TRAIN]), Split(images[N_TRAIN:], labels[N_TRAIN:])


def fresh_model() -> Classifier:
    torch.manual_seed(0)
    encoder = create_timm("test_resnet", pretrained=False, num_classes=0, input_size=32)
    return Classifier(encoder, 5)


def bare_loop(model: Classifier, train: PreparedSplit, val: PreparedSplit) -> float:
    """The loop anyone would write by hand: same optimiser, schedule, clipping and validation."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps = math.ceil(len(train) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, steps, steps * EPOCHS)
    )
    rng = np.random.default_rng(0)
    acc = 0.0
    for _ in range(EPOCHS):
        model.train()
        for x, y in train.batches(BATCH, rng.permutation(len(train))):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        model.eval()
        with torch.inference_mode():
            logits = torch.cat([model(x) for x, _ in val.batches(256)])
        acc = float((logits.argmax(1) == val.labels).float().mean())
    return acc


def engine(model: Classifier, train: PreparedSplit, val: PreparedSplit) -> float:
    cfg = TrainingConfig(max_epochs=EPOCHS, patience=EPOCHS, batch_size=BATCH, min_epoch_samples=0)
    groups = [{"params": list(model.parameters())}]
    return fit(model, groups, train, val, cfg, torch.device("cpu"), lr=1e-3, seed=0).best_val_acc


@pytest.mark.parametrize("loop", [bare_loop, engine], ids=["bare_pytorch", "atlbench_fit"])
def test_engine_overhead(benchmark, loop) -> None:
    torch.set_num_threads(2)
    train_split, val_split = make_data()
    probe = fresh_model()
    train, val = PreparedSplit(probe.encoder, train_split), PreparedSplit(probe.encoder, val_split)
    benchmark.group = "training engine: 3 epochs test_resnet, 512 examples (CPU)"
    acc = benchmark.pedantic(
        lambda: loop(fresh_model(), train, val), rounds=5, warmup_rounds=1, iterations=1
    )
    assert 0.0 <= acc <= 1.0
