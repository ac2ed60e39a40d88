"""Successive halving as run by the tuner: the same winner as ranking whole rungs, and no more
paused runs in memory than can still survive; the seeded trial design, selection on validation
loss, and the edge flag."""

from __future__ import annotations

import gc
import math
import weakref
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TensorSplit
from torch import nn

from atlbench.protocol import LogRange, TrainingConfig, design, edge_flags, halving_rungs
from atlbench.train import TrainingRun, selection_score
from atlbench.tuning import Stage, retrain_epochs, run_trials


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


# -- the trial design, the selection criterion and the edge flag (issue #23, item 4) ---------------

FT_SPACE = {"lr": LogRange(low=3e-4, high=1e-2), "backbone_lr_mult": LogRange(low=0.03, high=1.0)}


def unit(value: float, dim: LogRange) -> float:
    """Where ``value`` lies in ``dim``'s log-range, 0 at ``low`` and 1 at ``high``."""
    return math.log(value / dim.low) / math.log(dim.high / dim.low)


@pytest.mark.parametrize("trials", [1, 4, 7])
def test_design_is_a_latin_hypercube_inside_the_bounds(trials: int) -> None:
    for seed in range(5):
        points = design(FT_SPACE, trials, seed)
        assert len(points) == trials
        for name, dim in FT_SPACE.items():
            pos = sorted(unit(p[name], dim) for p in points)
            assert all(0.0 <= u <= 1.0 for u in pos)
            # one point in each of `trials` equal strata of the log-range
            assert [math.floor(u * trials) for u in pos] == list(range(trials))


def test_design_is_equal_for_equal_seeds_and_differs_across_seeds() -> None:
    assert design(FT_SPACE, 4, 3) == design(dict(reversed(FT_SPACE.items())), 4, 3)
    draws = [tuple(p["lr"] for p in design(FT_SPACE, 4, seed)) for seed in range(6)]
    assert len(set(draws)) == 6
    # not the old fixed mid-points: no stratum's centre, seed after seed
    assert all(abs(unit(lr, FT_SPACE["lr"]) * 4 % 1 - 0.5) > 1e-9 for d in draws for lr in d)


def test_a_shared_dimension_gets_the_same_points_on_both_sides_of_a_pair() -> None:
    scratch = design({"lr": FT_SPACE["lr"]}, 4, 11)
    finetune = design(FT_SPACE, 4, 11)
    assert [p["lr"] for p in scratch] == [p["lr"] for p in finetune]


def test_design_covers_choices_evenly_and_keeps_fixed_values() -> None:
    points = design({"k": ("a", "b"), "fixed": 0.5}, 6, 2)
    assert sorted(p["k"] for p in points) == ["a"] * 3 + ["b"] * 3
    assert {p["fixed"] for p in points} == {0.5}
    assert design({}, 3, 0) == [{}, {}, {}]


def test_selection_score_prefers_lower_loss_when_accuracy_ties() -> None:
    assert selection_score(1.0, 0.05) > selection_score(1.0, 0.30)  # loss breaks the tie
    assert selection_score(1.0, 0.30) > selection_score(0.8, 0.20)  # accuracy first
    assert selection_score(0.6, 3.0) > selection_score(0.6, float("nan"))  # diverged: last


def test_halving_picks_the_lower_loss_trial_when_accuracies_tie() -> None:
    cfg = TrainingConfig(max_epochs=6, patience=6, batch_size=8, min_epoch_samples=24,
                         warmup_epochs=0, schedule="full")  # fmt: skip
    easy = stage(cfg)
    easy.train, easy.val = separable(24, 1), separable(18, 2)
    trials = [{"lr": 0.01}, {"lr": 0.2}]  # the earlier trial learns slower: higher loss
    winner, results = run_trials(easy, trials)
    accs = [r.fit.best_val_acc for r in results]
    losses = [r.fit.best_val_loss for r in results]
    assert accs == [1.0, 1.0]  # a saturated hold-out: accuracy cannot tell them apart
    assert losses[1] < losses[0]
    assert winner == 1  # accuracy with ties to the earlier trial would have kept trial 0


def separable(n: int, seed: int) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    return TensorSplit(
        0.3 * torch.randn(n, 6, generator=g) + 4 * F.one_hot(labels, 6).float(), labels
    )


def test_edge_flag_fires_on_the_boundary_only() -> None:
    # the old design's highest point, flagged "at the high edge" before: interior, not flagged
    assert edge_flags(FT_SPACE, {"lr": 6.5e-3, "backbone_lr_mult": 0.645}) == []
    flags = edge_flags(FT_SPACE, {"lr": 9.9e-3, "backbone_lr_mult": 0.031})
    assert flags == [
        "backbone_lr_mult at the low edge of [0.03, 1]",
        "lr at the high edge of [0.0003, 0.01]",
    ]
    # just inside the 5% band at either end, and just outside it
    lr = FT_SPACE["lr"]
    span = math.log(lr.high / lr.low)
    assert edge_flags({"lr": lr}, {"lr": lr.low * math.exp(0.049 * span)}) != []
    assert edge_flags({"lr": lr}, {"lr": lr.low * math.exp(0.051 * span)}) == []
    assert edge_flags({"lr": lr}, {"lr": lr.high * math.exp(-0.049 * span)}) != []
    assert edge_flags({"k": (1, 2, 3)}, {"k": 3}) == ["k = 3, the last of its 3 choices"]
    assert edge_flags({"k": (1, 2, 3)}, {"k": 2}) == []


@pytest.mark.parametrize(
    ("best_epoch", "min_epochs", "max_epochs", "want"),
    [(0, 10, 20, 10), (3, 10, 20, 10), (14, 10, 20, 15), (0, 10, 6, 6), (0, 1, 20, 1)],
)
def test_the_retrain_runs_at_least_the_burn_in(
    best_epoch: int, min_epochs: int, max_epochs: int, want: int
) -> None:
    """A winner whose best hold-out epoch was its first (a scratch run still at chance) is
    retrained for ``min_epochs``, not one epoch; a later best epoch is kept as it is."""
    cfg = TrainingConfig(max_epochs=max_epochs, min_epochs=min_epochs)
    selected = SimpleNamespace(best_epoch=best_epoch)
    assert retrain_epochs(selected, cfg) == want  # type: ignore[arg-type]
