"""Frozen-feature strategies: a linear probe and kNN on cached features (no forward passes)."""

from __future__ import annotations

import time
import warnings

import numpy as np
from pydantic import Field

from atlbench.strategies.base import CellContext, CellOutcome, Strategy, StrategyParams


class LinearProbeParams(StrategyParams):
    # Kornblith et al. (2019) search 45 log-spaced values in [1e-6, 1e5]; 15 is a cheaper default.
    c_grid: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 15))
    max_iter: int = Field(2000, ge=10)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = train.mean(0)
    std = train.std(0) + 1e-8 * (np.abs(train).max() + 1e-30)
    return [(x - mean) / std for x in (train, *others)]


class LinearProbe(Strategy):
    """L2-regularised multinomial logistic regression (L-BFGS), strength picked on validation."""

    name = "linear_probe"
    Params = LinearProbeParams
    uses_features = True

    def run(self, ctx: CellContext) -> CellOutcome:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        p: LinearProbeParams = ctx.params
        x_tr, x_va, x_te = _standardise(
            ctx.features("train")[ctx.train_idx], ctx.features("val"), ctx.features("test")
        )
        y_tr, y_va = ctx.train_labels, ctx.task.val.labels
        grid, best, best_model = [], (-1.0, 0.0), None
        t0 = time.perf_counter()
        for c in p.c_grid:
            model = LogisticRegression(C=c, max_iter=p.max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_tr, y_tr)
            acc = float((model.predict(x_va) == y_va).mean())
            grid.append({"C": c, "val_acc": acc})
            if acc > best[0]:
                best, best_model = (acc, c), model
        train_time = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = best_model.predict(x_te)  # type: ignore[union-attr]
        eval_time = time.perf_counter() - t1
        n_params = x_tr.shape[1] * ctx.task.num_classes + ctx.task.num_classes
        return CellOutcome(
            test_pred=np.asarray(pred),
            val_acc=best[0],
            hparams={"C": best[1]},
            grid=grid,
            timing={
                "train_time_s": train_time / len(p.c_grid),
                "selection_time_s": train_time,
                "eval_samples_per_s": len(x_te) / max(eval_time, 1e-9),
            },
            trainable_params=n_params,
            total_params=n_params,
        )


class KNNParams(StrategyParams):
    k_grid: tuple[int, ...] = (1, 3, 5, 10, 20)
    metric: str = Field("cosine", pattern="^(cosine|euclidean)$")


class KNN(Strategy):
    """k-nearest neighbours on frozen features; k picked on validation."""

    name = "knn"
    Params = KNNParams
    uses_features = True

    def run(self, ctx: CellContext) -> CellOutcome:
        from sklearn.neighbors import KNeighborsClassifier

        p: KNNParams = ctx.params
        x_tr = ctx.features("train")[ctx.train_idx]
        x_va, x_te = ctx.features("val"), ctx.features("test")
        y_tr, y_va = ctx.train_labels, ctx.task.val.labels
        t0 = time.perf_counter()
        grid, best = [], (-1.0, 1)
        for k in p.k_grid:
            if k > len(x_tr):
                continue
            model = KNeighborsClassifier(n_neighbors=k, metric=p.metric).fit(x_tr, y_tr)
            acc = float((model.predict(x_va) == y_va).mean())
            grid.append({"k": k, "val_acc": acc})
            if acc > best[0]:
                best = (acc, k)
        fit_time = time.perf_counter() - t0
        model = KNeighborsClassifier(n_neighbors=best[1], metric=p.metric).fit(x_tr, y_tr)
        t1 = time.perf_counter()
        pred = model.predict(x_te)
        eval_time = time.perf_counter() - t1
        return CellOutcome(
            test_pred=np.asarray(pred),
            val_acc=best[0],
            hparams={"k": best[1], "metric": p.metric},
            grid=grid,
            timing={
                "train_time_s": fit_time / max(1, len(grid)),
                "selection_time_s": fit_time,
                "eval_samples_per_s": len(x_te) / max(eval_time, 1e-9),
            },
            trainable_params=0,
            total_params=0,
        )
