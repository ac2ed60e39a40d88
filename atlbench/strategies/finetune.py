"""Trainable strategies: fine-tuning (full, top-k blocks, layer-wise LR decay, L2-SP) and scratch.

Every one of them runs the same learning-rate grid and the same early-stopping budget from the
suite's ``training`` section, so scratch is tuned exactly as hard as transfer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from atlbench.sources.base import Encoder
from atlbench.strategies.base import (
    CellContext,
    CellOutcome,
    Strategy,
    StrategyParams,
    count_params,
)
from atlbench.timing import PeakMemory
from atlbench.train import Classifier, PreparedSplit, TrainConfig, fit, predict_logits


class FinetuneParams(StrategyParams):
    layers: Literal["all", "head"] | int = "all"
    backbone_lr_mult: float = Field(0.1, gt=0, le=1)
    layer_decay: float | None = Field(None, gt=0, le=1)
    l2sp: float = Field(0.0, ge=0)


class ScratchParams(StrategyParams):
    pass


def block_index(names: list[str], blocks: list[str]) -> list[int]:
    """For each parameter name, the index of its parameter group, 0 (stem) ... top, dense.

    Parameters before the first block (stem, embeddings) go with the stem; after the last (final
    norm), with the last block; so lower layers always get lower learning rates under layer-wise
    decay. Blocks without parameters (e.g. a ResNet's max-pool, which ``auto_layers`` lists as
    the stem) get no index, so ``layers: K`` always means K groups that really train.
    """
    raw, current = [], 0
    for name in names:
        for i, block in enumerate(blocks):
            if name == block or name.startswith(block + "."):
                current = i + 1
                break
        raw.append(current)
    dense = {v: rank for rank, v in enumerate(sorted(set(raw)))}
    return [dense[v] for v in raw]


def finetune_groups(model: Classifier, p: FinetuneParams) -> list[dict[str, Any]]:
    """Parameter groups: head at full LR, backbone blocks at lower (possibly decayed) LRs."""
    named = [(n, prm) for n, prm in model.encoder.named_parameters()]
    idx = block_index([n for n, _ in named], model.encoder.layer_names())
    n_blocks = max(idx) + 1
    frozen_below = 0
    if p.layers == "head":
        frozen_below = n_blocks
    elif isinstance(p.layers, int):
        frozen_below = max(0, n_blocks - p.layers)
    groups: dict[int, list[torch.nn.Parameter]] = {}
    for (_, prm), i in zip(named, idx, strict=True):
        if i < frozen_below:
            prm.requires_grad_(False)
        else:
            groups.setdefault(i, []).append(prm)
    out = []
    for i, params in sorted(groups.items()):
        mult = p.backbone_lr_mult
        if p.layer_decay is not None:
            mult *= p.layer_decay ** (n_blocks - 1 - i)
        out.append({"params": params, "lr_mult": mult, "name": f"block{i}"})
    out.append({"params": list(model.head.parameters()), "lr_mult": 1.0, "name": "head"})
    return out


def l2sp_penalty(model: Classifier, alpha: float) -> Any:
    """L2-SP (Li et al. 2018): pull backbone weights toward their pre-trained values."""
    anchors = {
        n: p.detach().clone() for n, p in model.encoder.named_parameters() if p.requires_grad
    }

    def penalty(m: torch.nn.Module) -> torch.Tensor:
        total = torch.zeros((), device=next(m.parameters()).device)
        for n, prm in m.encoder.named_parameters():  # type: ignore[union-attr]
            if n in anchors:
                anchor = anchors[n].to(prm.device)
                total = total + (prm - anchor).pow(2).sum()
        return 0.5 * alpha * total

    return penalty


ModelHook = Callable[[Classifier], None]
EpochHookFactory = Callable[[Classifier, list[dict[str, Any]]], Callable[[int], None]]
LossFactory = Callable[[Classifier, Encoder], Callable[[torch.nn.Module], torch.Tensor]]


def train_with_grid(
    ctx: CellContext,
    pretrained: bool,
    make_groups: Callable[[Classifier], list[dict[str, Any]]],
    l2sp: float = 0.0,
    *,
    wrap_encoder: Callable[[Encoder], Encoder] | None = None,
    make_model: Callable[[Encoder, int], Classifier] = Classifier,
    init_model: ModelHook | None = None,
    epoch_hook: EpochHookFactory | None = None,
    extra_loss: LossFactory | None = None,
    export_encoder: Callable[[Encoder], Encoder] | None = None,
) -> CellOutcome:
    """Run the suite's LR grid with early stopping on validation; score test once with the best.

    Selection sees only the validation split: each grid point keeps its best-validation epoch and
    the grid point with the highest validation accuracy wins (ties: the earlier, i.e. listed
    first). The test split is prepared and predicted exactly once, after selection.

    ``wrap_encoder`` adapts the encoder before the head is attached (LoRA injects adapters into a
    copy); ``make_model(encoder, num_classes)`` builds the network (multi-task adds auxiliary
    heads); ``init_model`` sets the initial weights every grid point starts from (LP-FT's probe
    head); ``epoch_hook(model, groups)`` returns an ``on_epoch_start`` (gradual unfreezing);
    ``extra_loss(model, encoder)`` returns a per-step loss term added to the objective (CORAL);
    ``export_encoder`` turns the trained encoder into the one the checkpoint stores (LoRA merges
    its adapters, so the checkpoint loads into the plain architecture for CKA).
    """
    cfg = ctx.training
    encoder = ctx.build_encoder(pretrained)
    if wrap_encoder is not None:
        encoder = wrap_encoder(encoder)
    train = PreparedSplit(encoder, ctx.task.train.subset(ctx.train_idx))
    val = PreparedSplit(encoder, ctx.task.val)
    memory = PeakMemory(ctx.device)
    torch.manual_seed(ctx.seed)
    initial_model = make_model(encoder, ctx.task.num_classes)
    if init_model is not None:
        init_model(initial_model)
    initial = {k: v.detach().clone() for k, v in initial_model.state_dict().items()}
    grid: list[dict[str, Any]] = []
    best, best_lr, best_fit, best_model, best_updated = -1.0, 0.0, None, None, 0
    started = time.perf_counter()
    for lr in cfg.lr_grid:
        model = initial_model
        model.load_state_dict(initial)
        for prm in model.parameters():
            prm.requires_grad_(True)
            prm.grad = None
        groups = make_groups(model)
        terms = [l2sp_penalty(model, l2sp)] if l2sp > 0 else []
        if extra_loss is not None:
            terms.append(extra_loss(model, encoder))
        extra = (lambda m, terms=terms: sum(t(m) for t in terms)) if terms else None
        train_cfg = TrainConfig(
            lr=lr,
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            warmup_epochs=cfg.warmup_epochs,
            grad_clip=cfg.grad_clip,
            optimizer=cfg.optimizer,
            seed=ctx.seed,
            compile=cfg.compile,
            min_epoch_samples=cfg.min_epoch_samples,
        )

        def report(epoch: int, total: int, acc: float, lr: float = lr) -> None:
            ctx.progress(f"lr {lr:g} epoch {epoch + 1}/{total} val {acc:.3f}")
            memory.sample()

        hook = epoch_hook(model, groups) if epoch_hook is not None else None
        result = fit(
            model,
            groups,
            train,
            val,
            train_cfg,
            ctx.device,
            extra,
            on_epoch=report,
            on_epoch_start=hook,
        )
        grid.append({"lr": lr, "val_acc": result.best_val_acc, "epochs": result.epochs_run})
        if result.best_val_acc > best:
            best, best_lr, best_fit = result.best_val_acc, lr, result
            best_model = {k: v.clone() for k, v in result.best_state.items()}
            best_updated = updated_params(model)
    selection_time = time.perf_counter() - started
    assert best_fit is not None and best_model is not None
    model = initial_model
    model.load_state_dict(best_model)
    test = PreparedSplit(encoder, ctx.task.test)
    t0 = time.perf_counter()
    logits = predict_logits(model, test, ctx.device)  # .cpu() inside: device work is finished
    eval_time = time.perf_counter() - t0
    _, total = count_params(model)
    extra_out: dict[str, Any] = {  # the runner records dtype; the LR grid is in ``grid``
        "micro_batch": best_fit.micro_batch or cfg.batch_size,
        "oom_retries": best_fit.oom_retries,
    }
    if ctx.checkpoint_dir is not None:
        from safetensors.torch import save_file

        ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.checkpoint_dir / "best.safetensors"
        kept = model.encoder if export_encoder is None else export_encoder(model.encoder)
        state = {k: v.contiguous().cpu() for k, v in kept.state_dict().items()}
        save_file(state, str(path))
        extra_out["checkpoint"] = str(path)
    return CellOutcome(
        test_pred=logits.argmax(1).astype(np.int64),
        val_acc=best,
        hparams={"lr": best_lr},
        grid=grid,
        timing={
            "train_time_s": best_fit.train_time_s,
            "selection_time_s": selection_time,
            "time_to_best_s": best_fit.time_to_best_s,
            "time_to_90pct_s": best_fit.time_to_90pct_s,
            "train_samples_per_s": best_fit.train_samples_per_s,
            "eval_samples_per_s": len(test) / max(eval_time, 1e-9),
            "warmup_time_s": best_fit.warmup_time_s,
            "compile_time_s": best_fit.compile_time_s,
            "epochs": float(best_fit.epochs_run),
            "best_epoch": float(best_fit.best_epoch + 1),
            "peak_mem_mb": memory.peak_mb(),
        },
        trainable_params=best_updated,
        total_params=total,
        extra=extra_out,
    )


def updated_params(model: torch.nn.Module) -> int:
    """Parameters the optimizer actually updated in the last step (they hold a gradient).

    ``requires_grad`` alone over-counts: a timm backbone keeps its unused source classifier, which
    would count as trainable although no gradient ever reaches it.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad and p.grad is not None)


class Finetune(Strategy):
    """Fine-tune a pre-trained backbone with a new head; backbone at a lower learning rate."""

    name = "finetune"
    version = 2  # 2: dense block groups (layers: K and layer_decay fixed)
    Params = FinetuneParams

    def run(self, ctx: CellContext) -> CellOutcome:
        p: FinetuneParams = ctx.params
        out = train_with_grid(ctx, True, lambda m: finetune_groups(m, p), l2sp=p.l2sp)
        out.hparams |= p.model_dump()
        return out


class Scratch(Strategy):
    """Same architecture, random init, same tuning budget: the baseline transfer must beat."""

    name = "scratch"
    Params = ScratchParams
    pretrained = False

    def run(self, ctx: CellContext) -> CellOutcome:
        return train_with_grid(
            ctx, False, lambda m: [{"params": list(m.parameters()), "lr_mult": 1.0}]
        )
