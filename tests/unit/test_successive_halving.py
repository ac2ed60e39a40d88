"""Successive halving as run by the tuner: the same winner as ranking whole rungs, and no more
paused runs in memory than can still survive."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TensorSplit
from torch import nn

from atlbench.protocol import TrainingConfig, halving_rungs
from atlbench.train import TrainingRun
from atlbench.tuning import Stage, run_trials


def split(n: int, seed: int) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    return TensorSplit(torch.randn(n, 6, generator=g) + 1.5 * F.one_hot(labels, 6).float(), labels)


class AllParams:
    """The slice of a strategy Stage.start calls: every parameter trains at the trial's lr."""

    def param_groups(self, ctx: Any, model: nn.Module, trial: dict) -> list[dict]:
        return [{"params": list(model.parameters())}]

    def extra_loss(self, *args: Any) -> None:
        return None

    def epoch_hook(self, *args: Any) -> None:
        return None


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def stage(cfg: TrainingConfig) -> Stage:
    model = mlp()
    ctx = SimpleNamespace(training=cfg, device=torch.device("cpu"), seed=4,
                          progress=lambda _msg: None)  # fmt: skip
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    memory = SimpleNamespace(sample=lambda: None)
    return Stage(AllParams(), ctx, model, initial, split(24, 1), split(18, 2), memory)  # type: ignore[arg-type]


def whole_rungs(cfg: TrainingConfig, trials: list[dict]) -> tuple[int, dict[int, list[float]]]:
    """The reference: every trial trained alone on its own model, rungs ranked when complete."""
    histories: dict[int, list[float]] = {}
    runs: dict[int, TrainingRun] = {}
    alive = list(range(len(trials)))
    for survivors, epochs in halving_rungs(len(trials), cfg.max_epochs, cfg.halving):
        alive = alive[:survivors]
        for i in alive:
            if i not in runs:
                model = mlp()
                runs[i] = TrainingRun(model, [{"params": list(model.parameters())}], split(24, 1),
                                      split(18, 2), cfg, torch.device("cpu"),
                                      lr=trials[i]["lr"], seed=4)  # fmt: skip
            histories[i] = runs[i].advance(epochs).result().val_history
        alive.sort(key=lambda i: (runs[i].score, -i), reverse=True)
    return alive[0], histories


@pytest.mark.parametrize("n_trials, seed", [(4, 0), (5, 1), (8, 2)])
def test_winner_and_histories_match_ranking_whole_rungs(
    n_trials: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    trials = [{"lr": float(lr)} for lr in 10 ** rng.uniform(-2.5, -0.3, n_trials)]
    cfg = TrainingConfig(max_epochs=8, patience=8, batch_size=8, min_epoch_samples=24,
                         warmup_epochs=0)  # fmt: skip
    winner_ref, histories = whole_rungs(cfg, trials)

    live: weakref.WeakSet[TrainingRun] = weakref.WeakSet()
    peak = [0]
    start = Stage.start

    def counting_start(self: Stage, *args: Any) -> TrainingRun:
        gc.collect()
        peak[0] = max(peak[0], len(live) + 1)
        run = start(self, *args)
        live.add(run)
        return run

    monkeypatch.setattr(Stage, "start", counting_start)
    winner, results = run_trials(stage(cfg), trials)
    assert winner == winner_ref
    assert [r.fit.val_history for r in results] == [histories[i] for i in range(n_trials)]
    # Only the winner keeps its best weights; an eliminated trial's are freed.
    assert results[winner].fit.best_state
    assert all(not r.fit.best_state for i, r in enumerate(results) if i != winner)
    # At most (survivors of the first rung + the run in training) runs exist at once.
    keep = halving_rungs(n_trials, cfg.max_epochs, cfg.halving)[1][0]
    assert peak[0] <= keep + 1 < n_trials


def test_a_selection_that_is_retrained_keeps_no_weights_and_picks_the_same_winner() -> None:
    cfg = TrainingConfig(max_epochs=8, patience=8, batch_size=8, min_epoch_samples=24,
                         warmup_epochs=0)  # fmt: skip
    trials = [{"lr": lr} for lr in (0.003, 0.03, 0.3, 0.1)]
    kept = run_trials(stage(cfg), trials)
    lean = stage(cfg)
    lean.keep_best = False
    winner, results = run_trials(lean, trials)
    assert winner == kept[0]
    assert [r.fit.val_history for r in results] == [r.fit.val_history for r in kept[1]]
    assert [r.fit.best_epoch for r in results] == [r.fit.best_epoch for r in kept[1]]
    assert all(not r.fit.best_state for r in results)
