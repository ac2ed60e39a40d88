"""The tuning protocol of every trainable strategy: trials, successive halving, retrain, predict.

1. ``training.trials`` configurations from the strategy's search space (a scrambled Latin
   hypercube drawn from the cell's seed, :func:`atlbench.protocol.design`): the same count for
   every strategy, scratch too, and the same points for paired cells with the same space.
2. Successive halving (Jamieson & Talwalkar 2016): all trials train to the first rung's epoch
   budget, the better half continues, until one trial reaches ``max_epochs``. Trials and epochs
   (early stopping, the best epoch) are judged by validation accuracy with the continuous loss
   breaking its ties (:func:`atlbench.train.selection_score`): a hold-out of a few images
   saturates accuracy, and the ties must not go to the first or largest point.
3. Selection reads only the selection split: under ``validation: budgeted`` a stratified hold-out
   of the label budget. The winner is then retrained on the whole budget with its values for its
   best number of epochs, at least ``min_epochs`` (VTAB-1k: select on 800/200, retrain on 1000).
   Early stopping never ends a run inside that ``min_epochs`` burn-in either: a network trained
   from scratch on a few images sits at chance on the hold-out for its first epochs, and a run
   judged and retrained on them collapsed (:func:`retrain_epochs`). Under
   ``validation: full`` the target's validation split selects and the winner is kept as is.
4. The test split is prepared and predicted exactly once, after selection.

The chosen values, every trial, and flags for a value on the boundary of its search space or a
run that was still improving at ``max_epochs`` are part of the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from atlbench._frozen_prefix import ACTIVATIONS, PREFIX_KEY, frozen_blocks
from atlbench._inputs import prepare_all, take, transform_for
from atlbench._timing import PeakMemory
from atlbench.protocol import TrainingConfig, describe_space, design, edge_flags, halving_rungs
from atlbench.record import Cost, Diagnostics, Tuning
from atlbench.sources._base import Encoder
from atlbench.strategies._base import CellContext, CellOutcome, count_params
from atlbench.train import (
    Classifier,
    FitResult,
    PreparedSplit,
    TrainingRun,
    autocast,
    predict_logits,
    to_device,
)

__all__ = ["LossTerm", "Stage", "Trial", "retrain_epochs", "run_trials", "tune"]

Trial = dict[str, Any]  # one configuration of the search space (lr, backbone_lr_mult, ...)
LossTerm = Callable[[nn.Module], torch.Tensor]


class Tunable(Protocol):
    """The template methods of :class:`~atlbench.strategies._trainable.Tunable`."""

    def encoder(self, ctx: CellContext) -> Encoder: ...
    def model(self, ctx: CellContext, encoder: Encoder) -> Classifier: ...
    def prepare_model(self, ctx: CellContext, model: Classifier, labelled: np.ndarray) -> None: ...
    def param_groups(
        self, ctx: CellContext, model: Classifier, trial: Trial
    ) -> list[dict[str, Any]]: ...
    def extra_loss(
        self, ctx: CellContext, model: Classifier, trial: Trial, train: PreparedSplit
    ) -> LossTerm | None: ...
    def epoch_hook(
        self, ctx: CellContext, model: Classifier, groups: list[dict[str, Any]], trial: Trial
    ) -> Callable[[int], None] | None: ...
    def export_encoder(self, encoder: Encoder) -> Encoder: ...
    def describe(self, ctx: CellContext) -> dict[str, Any]: ...


def updated_params(model: nn.Module) -> int:
    """Parameters the optimizer actually updated in the last step (they hold a gradient).

    ``requires_grad`` alone over-counts: a timm backbone keeps its unused source classifier, which
    would count as trainable although no gradient ever reaches it.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad and p.grad is not None)


@dataclass
class Stage:
    """What every run of one stage shares: the model object, its start state and its data."""

    strategy: Tunable
    ctx: CellContext
    model: Classifier
    initial: dict[str, torch.Tensor]
    train: PreparedSplit
    val: PreparedSplit | None
    memory: PeakMemory
    keep_best: bool = True  # False when a retrain replaces the selected weights

    def start(self, trial: Trial, index: int, total: int) -> TrainingRun:
        """A fresh run of ``trial`` from the stage's initial weights."""
        model, ctx = self.model, self.ctx
        model.load_state_dict(self.initial)
        for prm in model.parameters():
            prm.requires_grad_(True)
            prm.grad = None
        groups = self.strategy.param_groups(ctx, model, trial)
        grouped = {id(p) for g in groups for p in g["params"]}
        for prm in model.parameters():
            if id(prm) not in grouped:
                prm.requires_grad_(False)

        def report(epoch: int, max_epochs: int, acc: float) -> None:
            ctx.progress(f"trial {index + 1}/{total} epoch {epoch + 1}/{max_epochs} val {acc:.3f}")
            self.memory.sample()

        return TrainingRun(
            model, groups, self.train, self.val, ctx.training, ctx.device,
            lr=float(trial["lr"]), seed=ctx.seed,
            weight_decay=trial.get("weight_decay"),
            extra_loss=self.strategy.extra_loss(ctx, model, trial, self.train),
            on_epoch_start=self.strategy.epoch_hook(ctx, model, groups, trial),
            on_epoch=report,
            initial=self.initial, keep_best=self.keep_best,
        )  # fmt: skip


@dataclass
class TrialResult:
    trial: Trial
    rung: int
    fit: FitResult


def _requires_grad(model: torch.nn.Module) -> list[bool]:
    return [p.requires_grad for p in model.parameters()]


def _set_requires_grad(model: torch.nn.Module, mask: list[bool]) -> None:
    for prm, flag in zip(model.parameters(), mask, strict=True):
        prm.requires_grad_(flag)


def run_trials(stage: Stage, trials: list[Trial]) -> tuple[int, list[TrialResult]]:
    """Successive halving over ``trials``; returns the winner's index and every trial's result.

    Runs share one model object: a paused run keeps its weights and trainable mask aside.
    Ranking is by each run's best :func:`~atlbench.train.selection_score` (validation accuracy,
    loss breaking ties); exact ties keep the earlier trial, whose place in the seeded design is
    random. A run is freed as soon as as many finished runs of its rung as go on outrank it, so
    at most the survivors
    of a rung plus the run in training are held: the same winner, a fraction of the memory.
    """
    cfg = stage.ctx.training
    if cfg.schedule == "successive_halving":
        rungs = halving_rungs(len(trials), cfg.max_epochs, cfg.halving)
    else:
        rungs = [(len(trials), cfg.max_epochs)]
    runs: dict[int, TrainingRun] = {}
    masks: dict[int, list[bool]] = {}
    results: dict[int, TrialResult] = {}
    alive = list(range(len(trials)))

    def rank(i: int) -> tuple[tuple[float, float], int]:
        return runs[i].score, -i

    def eliminate(i: int) -> None:
        """Free a run that cannot go on: its weights, optimizer state and best snapshot."""
        del runs[i]
        results[i].fit.best_state = {}

    for rung, (survivors, epochs) in enumerate(rungs):
        alive = alive[:survivors]
        keep_n = rungs[rung + 1][0] if rung + 1 < len(rungs) else 1
        finished: list[int] = []
        for i in alive:
            if i in runs:
                runs[i].resume()
                _set_requires_grad(stage.model, masks[i])
            else:
                runs[i] = stage.start(trials[i], i, len(trials))
            runs[i].advance(epochs)
            results[i] = TrialResult(trials[i], rung, runs[i].result())
            masks[i] = _requires_grad(stage.model)
            runs[i].suspend()
            finished.append(i)
            if len(finished) > keep_n:  # ranked below keep_n finished runs: it cannot survive
                worst = min(finished, key=rank)
                finished.remove(worst)
                eliminate(worst)
        alive = sorted(finished, key=rank, reverse=True)  # the keep_n survivors, best first
    winner = alive[0]
    return winner, [results[i] for i in range(len(trials))]


class Inputs:
    """Model-ready data of a cell: prepared once per split, frozen-prefix activations when a
    prefix is cached (:mod:`atlbench._frozen_prefix`), sliced to the rows each stage uses."""

    def __init__(self, ctx: CellContext, encoder: Encoder, prefix: Any) -> None:
        self.ctx, self.encoder, self.prefix = ctx, encoder, prefix

    def __call__(self, split: str, idx: np.ndarray | None) -> PreparedSplit:
        ctx = self.ctx
        if split == "train":
            assert idx is not None
            labels = ctx.labels(idx)
        else:
            labels = ctx.task.split(split).labels
            labels = labels if idx is None else labels[idx]
        data = prepare_all(self.encoder, ctx.task, split)
        if self.prefix is not None:
            data = dict(data) | {PREFIX_KEY: self._activations(split, data)}
        if idx is not None:
            data = take(data, torch.as_tensor(np.asarray(idx, dtype=np.int64)))
        return PreparedSplit.from_tensors(data, labels, transform_for(self.encoder, data))

    def _activations(self, split: str, data: Any) -> torch.Tensor:
        ctx, prefix = self.ctx, self.prefix
        key = ("prefix", repr(ctx.source.fingerprint), repr(ctx.task.fingerprint), split,
               prefix.blocks, self.encoder.preprocessing(), len(ctx.task.split(split)))  # fmt: skip

        def make() -> torch.Tensor:
            self.encoder.to(ctx.device)
            n = len(next(iter(data.values())))
            parts = []
            with autocast(ctx.device):
                for start in range(0, n, 256):
                    rows = take(data, torch.arange(start, min(n, start + 256)))
                    parts.append(prefix.compute(to_device(rows, ctx.device)).cpu())
            return torch.cat(parts)

        if not ctx.task.fingerprint or not ctx.source.fingerprint:
            return make()  # nothing says what the activations depend on: do not share them
        return ACTIVATIONS.get(key, make)


def plan_prefix(
    strategy: Tunable, ctx: CellContext, model: Classifier, trial: Trial
) -> tuple[Any, str]:
    """The frozen prefix this cell can cache, and why (or why not), for the record."""
    cfg = ctx.training
    if not getattr(strategy, "caches_frozen_prefix", False):
        return None, "off: the strategy reads or trains every block"
    if not cfg.prefix_cache:
        return None, "off: prefix_cache is false"
    if cfg.augment != "none":
        return None, "off: augmented inputs change the prefix's outputs"
    if not ctx.pretrained:
        return None, "off: a random initialisation"
    groups = strategy.param_groups(ctx, model, trial)
    trained = {id(p) for g in groups for p in g["params"]}
    encoder = model.encoder
    cut = frozen_blocks(encoder.layer_names(), list(encoder.named_parameters()), trained)
    if cut == 0:
        return None, "off: no frozen block"
    prefix = encoder.frozen_prefix(cut)
    if prefix is None:
        return None, f"off: {type(encoder).__name__} cannot start from a block's output"
    return prefix, f"exact: {prefix.description}"


def _stage(
    strategy: Tunable,
    ctx: CellContext,
    model: Classifier,
    train: PreparedSplit,
    labelled: np.ndarray,
    val: PreparedSplit | None,
    memory: PeakMemory,
    keep_best: bool = True,
) -> Stage:
    strategy.prepare_model(ctx, model, labelled)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Stage(strategy, ctx, model, initial, train, val, memory, keep_best)


def _select_retrain_predict(
    strategy: Tunable, ctx: CellContext, model: Classifier, inputs: Inputs, memory: PeakMemory
) -> tuple[int, list[TrialResult], FitResult, float, np.ndarray, float]:
    """Trials on the selection split, the retrain on the whole budget, one test prediction."""
    cfg, sel = ctx.training, ctx.selection
    started = time.perf_counter()
    val = inputs("train", sel.val_idx) if sel.budgeted else inputs("val", None)
    retrain = sel.budgeted and sel.retrain
    fit_split = inputs("train", sel.fit_idx)
    selecting = _stage(strategy, ctx, model, fit_split, sel.fit_idx, val, memory, not retrain)
    trials = design(ctx.search, cfg.trials, ctx.seed)
    winner, results = run_trials(selecting, trials)
    selection_time = time.perf_counter() - started
    best = results[winner]
    final = best.fit
    if retrain:
        del selecting
        budget = inputs("train", ctx.budget_idx)
        retraining = _stage(strategy, ctx, model, budget, ctx.budget_idx, None, memory)
        run = retraining.start(best.trial, winner, len(trials))
        final = run.advance(retrain_epochs(best.fit, cfg)).result()
    model.load_state_dict(final.best_state)
    test = inputs("test", None)
    t0 = time.perf_counter()
    logits = predict_logits(model, test, ctx.device, cfg.eval_batch_size)
    rate = len(test) / max(time.perf_counter() - t0, 1e-9)
    return winner, results, final, selection_time, logits, rate


def retrain_epochs(selected: FitResult, cfg: TrainingConfig) -> int:
    """The retrain's length: the selected run's best epoch count, but at least the burn-in
    ``min_epochs`` (capped at ``max_epochs``). A run whose best hold-out score came in its first
    epochs, while it was still at chance, is not retrained for one epoch (issue #23)."""
    return max(selected.best_epoch + 1, min(cfg.min_epochs, cfg.max_epochs))


def tune(strategy: Tunable, ctx: CellContext) -> CellOutcome:
    """Select among ``training.trials`` configurations, retrain, predict the test split once."""
    encoder = strategy.encoder(ctx)
    torch.manual_seed(ctx.seed)
    model = strategy.model(ctx, encoder)
    memory = PeakMemory(ctx.device)
    prefix, prefix_note = plan_prefix(strategy, ctx, model, design(ctx.search, 1, ctx.seed)[0])
    inputs = Inputs(ctx, encoder, prefix)
    with prefix.installed() if prefix is not None else nullcontext():
        winner, results, final, selection_time, logits, rate = _select_retrain_predict(
            strategy, ctx, model, inputs, memory
        )
    best = results[winner]
    facts = strategy.describe(ctx)
    checkpoint = save_checkpoint(strategy, model, ctx) if ctx.checkpoint_dir is not None else None
    _, total = count_params(model)
    return CellOutcome(
        test_pred=logits.argmax(1).astype(np.int64),
        val_acc=best.fit.best_val_acc,
        tuning=_tuning(ctx, best, results, final),
        cost=_cost(best.fit, final, selection_time, rate, memory, prefix_note),
        trainable_params=updated_params(model),
        total_params=total,
        diagnostics=_diagnostics(best.fit),
        checkpoint=checkpoint,
        strategy_facts=facts,
        encoder=model.encoder,  # type: ignore[arg-type]
    )


def _trial_row(result: TrialResult) -> dict[str, Any]:
    fit = result.fit
    return dict(result.trial) | {
        "val_acc": fit.best_val_acc,
        "val_loss": fit.best_val_loss,
        "epochs": fit.epochs_run,
        "best_epoch": fit.best_epoch + 1,
        "rung": result.rung,
        "stopped_early": fit.stopped_early,
    }


def _cost(
    best: FitResult,
    final: FitResult,
    selection: float,
    eval_rate: float,
    memory: PeakMemory,
    prefix_note: str,
) -> Cost:
    return Cost(
        train_time_s=final.train_time_s,
        data_wait_s=final.data_wait_s,  # of train_time_s: waiting for batches, not computing
        compute_time_s=final.train_time_s - final.data_wait_s,
        selection_time_s=selection,
        time_to_best_s=best.time_to_best_s,
        time_to_90pct_s=best.time_to_90pct_s,
        train_samples_per_s=best.train_samples_per_s,
        eval_samples_per_s=eval_rate,
        warmup_time_s=best.warmup_time_s,
        compile_time_s=best.compile_time_s,
        peak_mem_mb=memory.peak_mb(),
        prefix_cache=prefix_note,
    )


def _tuning(
    ctx: CellContext, best: TrialResult, results: list[TrialResult], final: FitResult
) -> Tuning:
    """The chosen values, every trial, and flags for a choice on the boundary of its space."""
    cfg = ctx.training
    flags = edge_flags(ctx.search, best.trial)
    if best.fit.best_epoch + 1 >= cfg.max_epochs:
        flags.append(f"still improving at max_epochs ({cfg.max_epochs})")
    return Tuning(
        hparams=ctx.params.model_dump() | dict(best.trial),  # searched values, not None
        trials=[_trial_row(r) for r in results],
        n_trials=len(results),
        edge_flags=flags,
        search=describe_space(ctx.search),
        schedule=cfg.schedule,
        epochs=final.epochs_run,
        best_epoch=best.fit.best_epoch + 1,
        retrain_epochs=final.epochs_run if final is not best.fit else 0,
        micro_batch=final.micro_batch or cfg.batch_size,
        oom_retries=final.oom_retries,
    )


def _diagnostics(fit: FitResult) -> Diagnostics:
    """Overfitting diagnostics of the selected run (training batches vs validation)."""
    gap = (
        fit.train_history[fit.best_epoch] - fit.best_val_acc if fit.train_history else float("nan")
    )
    return Diagnostics(train_val_gap=gap, val_curve=fit.val_history, train_curve=fit.train_history)


def save_checkpoint(strategy: Tunable, model: Classifier, ctx: CellContext) -> str:
    """The trained encoder (as :meth:`export_encoder` gives it) as safetensors."""
    from safetensors.torch import save_file

    assert ctx.checkpoint_dir is not None
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.checkpoint_dir / "best.safetensors"
    kept = strategy.export_encoder(model.encoder)  # type: ignore[arg-type]
    save_file({k: v.contiguous().cpu() for k, v in kept.state_dict().items()}, str(path))
    return str(path)
