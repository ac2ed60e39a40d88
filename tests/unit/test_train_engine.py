"""The training engine: gradient accumulation, the OOM retry, and what the clock reports."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import TensorSplit
from torch import nn

from atlbench.protocol import TrainingConfig
from atlbench.train import (
    FitResult,
    RowSparse,
    TrainingRun,
    accumulate_gradients,
    fit,
    train_mode,
)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def blobs(n: int, seed: int) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 6, generator=g) + 2.0 * F.one_hot(y, 6).float()
    return TensorSplit(x, y)


@pytest.mark.parametrize("micro", [1, 3, 4, 10, None])
def test_accumulated_gradient_equals_full_batch(micro: int | None) -> None:
    model = mlp()
    reference = copy.deepcopy(model)
    data = blobs(10, 1)
    anchor = [p.detach().clone() + 0.1 for p in model.parameters()]

    def l2(m: nn.Module) -> torch.Tensor:
        return sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor, strict=True))

    cpu = torch.device("cpu")
    accumulate_gradients(model, data.data, data.labels, cpu, micro, lambda: l2(model))
    # Independent reference: one plain backward of the full-batch objective.
    loss = F.cross_entropy(reference(data.data), data.labels) + l2(reference)
    loss.backward()
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-6)


def _cfg(**kw: object) -> TrainingConfig:
    base = dict(max_epochs=4, patience=10, batch_size=8, warmup_epochs=1, min_epoch_samples=0)
    return TrainingConfig(**(base | kw))  # type: ignore[arg-type]


def _run(model: nn.Module, cfg: TrainingConfig, micro_batch: int | None = None) -> FitResult:
    groups = [{"params": list(model.parameters())}]
    cpu = torch.device("cpu")
    return fit(
        model,
        groups,
        blobs(40, 1),
        blobs(15, 2),
        cfg,
        cpu,
        lr=0.05,
        seed=3,
        micro_batch=micro_batch,
    )


class OOMAbove(nn.Module):
    """Wraps a model and raises CUDA's OOM error for training batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.ooms = inner, limit, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            self.ooms += 1
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return self.inner(x)


def test_oom_retries_once_with_half_micro_batch_from_the_same_start() -> None:
    flaky = OOMAbove(mlp(), limit=4)
    # Let the first attempt train a little before failing, so a retry that forgot to restore the
    # initial weights would be caught by the comparison below.
    flaky.limit = 10**9
    calls = {"n": 0}
    original = flaky.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 7:
            flaky.limit = 4
        return original(x)

    flaky.forward = forward  # type: ignore[method-assign]
    result = _run(flaky, _cfg())
    assert flaky.ooms == 1 and result.oom_retries == 1 and result.micro_batch == 4
    direct = _run(OOMAbove(mlp(), limit=4), _cfg(), micro_batch=4)
    assert result.val_history == direct.val_history
    for k, v in direct.best_state.items():
        torch.testing.assert_close(result.best_state[k], v)


def test_second_oom_and_other_errors_propagate() -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _run(OOMAbove(mlp(), limit=0), _cfg())

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("not memory")

    model = Broken()
    model.w = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="not memory"):
        _run(model, _cfg())


def test_clock_fields_are_consistent_and_selection_reads_validation() -> None:
    result = _run(mlp(), _cfg(max_epochs=5))
    ends = result.epoch_end_times
    assert len(ends) == result.epochs_run == len(result.val_history)
    assert all(b >= a for a, b in itertools.pairwise(ends))
    assert result.warmup_time_s == ends[0]
    assert 0 < result.first_step_s <= ends[0]
    assert result.compile_time_s == 0.0  # only measured when compiled
    assert result.samples_seen == 40 * result.epochs_run
    # On CPU without compile the throughput covers every epoch.
    assert result.train_samples_per_s == pytest.approx(result.samples_seen / result.train_time_s)
    # the best epoch by selection_score: the highest accuracy, the lowest loss among its ties
    assert result.best_val_acc == result.val_history[result.best_epoch] == max(result.val_history)
    assert result.time_to_best_s == ends[result.best_epoch]
    first90 = next(i for i, a in enumerate(result.val_history) if a >= 0.9 * result.best_val_acc)
    assert result.time_to_90pct_s == ends[first90]


def test_best_state_is_the_best_validation_epoch() -> None:
    model = mlp()
    val = blobs(15, 2)
    groups = [{"params": list(model.parameters())}]
    result = fit(
        model, groups, blobs(40, 1), val, _cfg(max_epochs=6), torch.device("cpu"), lr=0.05, seed=3
    )
    model.load_state_dict(result.best_state)
    with torch.no_grad():
        logits = model(val.data)
    acc = float((logits.argmax(1) == val.labels).float().mean())
    assert acc == pytest.approx(result.best_val_acc)
    assert float(F.cross_entropy(logits, val.labels)) == pytest.approx(result.best_val_loss)


def test_a_resumed_run_is_the_uninterrupted_run() -> None:
    """Successive halving pauses runs at rung boundaries; resuming must change nothing."""
    cpu = torch.device("cpu")
    cfg = _cfg(max_epochs=6)
    model = mlp()
    groups = [{"params": list(model.parameters())}]
    reference = fit(model, groups, blobs(40, 1), blobs(15, 2), cfg, cpu, lr=0.05, seed=3)
    shared = mlp()

    def trial(lr: float, seed: int) -> TrainingRun:
        groups = [{"params": list(shared.parameters())}]
        return TrainingRun(shared, groups, blobs(40, 1), blobs(15, 2), cfg, cpu, lr=lr, seed=seed)

    run, other = trial(0.05, 3), trial(0.2, 9)
    run.advance(2)
    run.suspend()
    other.advance(3)  # another trial trains the same model object in between
    other.suspend()
    run.resume()
    result = run.advance(6).result()
    assert result.val_history == reference.val_history
    for k, v in reference.best_state.items():
        torch.testing.assert_close(result.best_state[k], v)


def test_frozen_modules_stay_in_eval_mode() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    for prm in model[1].parameters():
        prm.requires_grad_(False)
    for prm in model[0].parameters():
        prm.requires_grad_(False)
    train_mode(model)
    assert model.training and model[3].training
    assert not model[1].training  # frozen BatchNorm keeps its running statistics
    assert not model[0].training
    assert model[2].training  # a dropout outside any frozen block still drops


def test_snapshots_share_frozen_tensors_and_survive_a_run_that_changes_them() -> None:
    """A frozen layer's tensors are shared with the start weights, not copied; a run that trains
    that layer in between must not leak into the paused run that keeps it frozen."""
    cpu = torch.device("cpu")
    cfg = _cfg(max_epochs=6)

    def frozen_first(model: nn.Module) -> list[dict]:
        for prm in model[0].parameters():
            prm.requires_grad_(False)
        return [{"params": list(model[2].parameters())}]

    alone = mlp()
    groups = frozen_first(alone)
    reference = fit(alone, groups, blobs(40, 1), blobs(15, 2), cfg, cpu, lr=0.1, seed=3)

    shared = mlp()
    initial = {k: v.detach().clone() for k, v in shared.state_dict().items()}
    run = TrainingRun(shared, frozen_first(shared), blobs(40, 1), blobs(15, 2), cfg, cpu,
                      lr=0.1, seed=3, initial=initial)  # fmt: skip
    run.advance(2)
    run.suspend()
    assert run.best_state["0.weight"] is initial["0.weight"]  # shared, not copied
    assert run.best_state["2.weight"] is not initial["2.weight"]
    for prm in shared.parameters():
        prm.requires_grad_(True)
    other = TrainingRun(shared, [{"params": list(shared.parameters())}], blobs(40, 1),
                        blobs(15, 2), cfg, cpu, lr=0.5, seed=9, initial=initial)  # fmt: skip
    other.advance(3)  # trains the layer the first run keeps frozen
    assert not torch.equal(shared[0].weight, initial["0.weight"])
    other.suspend()
    for prm in shared[0].parameters():
        prm.requires_grad_(False)
    run.resume()
    result = run.advance(6).result()
    assert result.val_history == reference.val_history
    for k, v in reference.best_state.items():
        torch.testing.assert_close(result.best_state[k], v, rtol=0, atol=0)


def test_row_sparse_round_trip_is_exact() -> None:
    g = torch.Generator().manual_seed(11)
    t = torch.zeros(3000, 24)
    rows = torch.randperm(3000, generator=g)[:40]
    t[rows] = torch.randn(40, 24, generator=g)
    packed = RowSparse.pack(t)
    assert isinstance(packed, RowSparse) and len(packed.rows) == 40
    assert torch.equal(packed.unpack(), t)
    dense = torch.randn(3000, 24, generator=g)
    assert RowSparse.pack(dense) is dense  # mostly non-zero: kept as it is


class Bag(nn.Module):
    """A large embedding table of which the data use a few rows, as a text target uses a few
    tokens of a vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10_000, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(x).mean(1))


def tokens(n: int, seed: int) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randint(0, 20, (n, 5), generator=g) + 20 * y[:, None]
    return TensorSplit(x, y)


def test_a_paused_runs_packed_moments_resume_exactly() -> None:
    cpu = torch.device("cpu")
    cfg = _cfg(max_epochs=5)

    def start(model: nn.Module, lr: float, seed: int) -> TrainingRun:
        return TrainingRun(model, [{"params": list(model.parameters())}], tokens(30, 1),
                           tokens(12, 2), cfg, cpu, lr=lr, seed=seed)  # fmt: skip

    reference = start(Bag(), 0.05, 3).advance(5).result()
    shared = Bag()
    run, other = start(shared, 0.05, 3), start(shared, 0.2, 9)
    run.advance(2)
    run.suspend()
    moments = run.optimizer.state[shared.emb.weight]
    assert isinstance(moments["exp_avg"], RowSparse)  # 60 of 10,000 rows were ever used
    other.advance(3)
    other.suspend()
    run.resume()
    assert isinstance(run.optimizer.state[shared.emb.weight]["exp_avg"], torch.Tensor)
    result = run.advance(5).result()
    assert result.val_history == reference.val_history
    for k, v in reference.best_state.items():
        torch.testing.assert_close(result.best_state[k], v, rtol=0, atol=0)


@pytest.mark.parametrize(("min_epochs", "stopped_after"), [(1, 2), (5, 5), (9, 8)])
def test_patience_never_stops_a_run_inside_the_burn_in(min_epochs: int, stopped_after: int) -> None:
    """lr 0: the validation score never improves after epoch 1, so patience 1 would stop the
    run after epoch 2; the burn-in keeps it going to ``min_epochs`` (at most ``max_epochs``)."""
    model = mlp()
    groups = [{"params": list(model.parameters())}]
    cfg = _cfg(max_epochs=8, patience=1, min_epochs=min_epochs)
    result = fit(model, groups, blobs(40, 1), blobs(15, 2), cfg, torch.device("cpu"), lr=0.0)
    assert result.epochs_run == stopped_after
    assert result.stopped_early == (stopped_after < cfg.max_epochs)
    assert result.best_epoch == 0


@pytest.mark.parametrize(("n", "passes_samples", "seen"), [(5, 64, 64), (9, 0, 8), (8, 0, 8)])
def test_a_last_batch_of_one_example_is_dropped(n: int, passes_samples: int, seen: int) -> None:
    """Batch norm cannot train on one example: 5 examples repeated to 64 samples per epoch
    (13 passes, 65 samples) in batches of 32 would end on a batch of one, and so would 9 in
    batches of 8. The epoch drops that one example; other remainders keep every example."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3))
    groups = [{"params": list(model.parameters())}]
    cfg = _cfg(max_epochs=1, batch_size=32 if passes_samples else 8,
               min_epoch_samples=passes_samples)  # fmt: skip
    result = fit(model, groups, blobs(n, 1), blobs(6, 2), cfg, torch.device("cpu"), lr=0.1)
    assert result.samples_seen == seen
