"""Within-target model selection: rank a new target's candidate sources from past results.

The question is the order of the sources on one target. Published tables differ far more
between targets than between models on a target: on the 11 x 11 supervised table SFDA and
ETran evaluate on (shipped in ``atlbench/data``), target means spread with an SD of about 10
points, models within a target by about 3. A regression of raw accuracy pooled over targets
therefore learns target difficulty, not model quality: pooled, a source's history on the other
targets *falls* as the held-out target's accuracy rises, although within a target the two
correlate at +0.77, and such a model ranks the sources backwards.

So the model is fitted within targets, the fixed-effects "within" estimator of panel data
(Wooldridge 2010, *Econometric Analysis of Cross Section and Panel Data*, 2nd ed., ch. 10.5):
each training target's mean and spread are removed before anything is fitted::

    (truth[t, s] - mean_t) / sd_t = sum_k beta_k z_k[t, s] + gamma zh[t, s] + error

``truth`` is the seed-mean accuracy of the suite's tuned fine-tuning recipe (``Views.truth``);
``z_k`` is estimator ``k``'s seed-mean score z-scored over target ``t``'s candidates (raw scores
are not on one scale across targets: LogME, for one, moves with the class count); ``zh`` is the
source's *relative* history, its mean deviation from the target mean on the other training
targets, divided by its SD over the training rows. No intercept: within a target it is
``mean_t``. The
coefficients are a ridge estimate (Hoerl & Kennard 1970, Technometrics 12(1)), so correlated
estimators share weight instead of cancelling. With no estimator the model ranks by relative
history, which orders a target's sources exactly as the history baseline does when every source
was measured on the same targets.

Predicted accuracy on a new target is ``level + spread * (x . beta)``: the mean level and mean
within-target SD of the training targets, since a new target's own difficulty is unknown until
something is fine-tuned on it. That unknown level dominates the error of the accuracy (not of
the order), and the interval says so: every training target is held out in turn, the model
refitted on the rest and the held-out sources' residuals collected (the jackknife of Barber et
al. 2021, Ann. Statist. 49(1), with a target as the unit left out); the half-width is the
``level`` quantile of their absolute values with every target weighted equally (the CDF pooling
of Dunn, Wasserman & Ramdas 2022, JASA 118(541), for a new group of a two-layer hierarchy). The
interval is then intersected with [0, 1]: an accuracy lies there, so the intersection keeps the
coverage and drops only impossible values. Coverage is asymptotic in the number of targets.

This is a simplified take on the "Back to Bayes" model of Chaves et al. (2024, arXiv:2405.20420),
a hierarchical regression that fuses several scorers with the sources' ImageNet accuracy: here
one within-target level, the ridge posterior mode, and the history term in place of ImageNet
accuracy. Whether it helps is checked, not assumed: :func:`loto_validation` holds out one target
at a time beside the history baseline, and ``atlbench recommend`` falls back to history alone
when the fitted model does not beat it.

Sources and targets are matched across stores by id; truths of one (source, target, budget)
found in several stores are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from atlbench.analysis._correlation import MIN_SOURCES
from atlbench.analysis._selection import HISTORY
from atlbench.errors import AtlbenchError
from atlbench.report._views import BASELINES
from atlbench.store import Store

MIN_TARGETS = 3  # one held out, two to fit: the fewest that give every training row a history
MODEL = "recommend"
NOT_FEATURES = (*BASELINES, HISTORY)
VALIDATION_COLUMNS = ["target", "budget", "method", "kind", "n_sources", "weighted_tau", "coverage"]
TIE = 5e-4  # mean taus this close are a tie (three printed decimals)

__all__ = [
    "MODEL",
    "Panel",
    "SelectionModel",
    "beats_history",
    "feature_estimators",
    "fit_panel",
    "fit_selection_model",
    "load_evidence",
    "loto_validation",
    "pick_budget",
    "pooled_quantile",
    "predict_target",
    "seed_means",
    "validation_summary",
    "verdict",
]


def load_evidence(results_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(estimates, truth)`` of every store, as ``Views.estimates`` and ``Views.truth`` give
    them (each store's own plan and truth strategy), concatenated; a missing store is a
    one-line error."""
    from atlbench.report._views import Views

    estimates, truth = [], []
    for directory in results_dirs:
        with Store(directory) as store:
            views = Views.from_store(store)
            estimates.append(views.estimates)
            truth.append(views.truth)
    return pd.concat(estimates, ignore_index=True), pd.concat(truth, ignore_index=True)


def _score_means(estimates: pd.DataFrame, budget: str) -> pd.DataFrame:
    """Seed-mean scores at one budget (target, source, estimator, score), finite only."""
    est = estimates.loc[estimates["budget"].astype(str).eq(budget)]
    est = est.assign(score=pd.to_numeric(est["score"], errors="coerce"))
    est = est.loc[np.isfinite(est["score"].to_numpy(dtype=float))]
    return est.groupby(["target", "source", "estimator"], as_index=False)["score"].mean()


def _truth_means(truth: pd.DataFrame, budget: str) -> pd.DataFrame:
    """Seed-mean truths at one budget (target, source, truth), finite only."""
    tru = truth.loc[truth["budget"].astype(str).eq(budget)]
    tru = tru.assign(truth=pd.to_numeric(tru["truth"], errors="coerce"))
    tru = tru.loc[np.isfinite(tru["truth"].to_numpy(dtype=float))]
    return tru.groupby(["target", "source"], as_index=False)["truth"].mean()


def seed_means(
    estimates: pd.DataFrame, truth: pd.DataFrame, budget: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seed-mean ``(scores, truths)`` at one budget, finite values only."""
    return _score_means(estimates, budget), _truth_means(truth, budget)


def feature_estimators(scores: pd.DataFrame, truths: pd.DataFrame) -> list[str]:
    """Estimators scored on every target that has truths (baselines excluded): only those can be
    standardised on every training target and asked of a new one."""
    targets = set(truths["target"])
    est = scores.loc[scores["target"].isin(targets) & ~scores["estimator"].isin(NOT_FEATURES)]
    covered = est.groupby("estimator")["target"].nunique()
    return sorted(str(e) for e in covered.index[covered.eq(len(targets))])


def _zscores(
    scores: pd.DataFrame, sources: Sequence[str], estimators: Sequence[str]
) -> pd.DataFrame:
    """One target's scores (source, estimator, score), each estimator z-scored over the scored
    candidates, per source of ``sources``; a missing score sits at the mean (0)."""
    if not estimators:
        return pd.DataFrame(index=pd.Index(list(sources)))
    part = scores.loc[scores["estimator"].isin(estimators)]
    wide = part.pivot_table(index="source", columns="estimator", values="score")
    wide = wide.reindex(columns=list(estimators))
    sd = wide.std(ddof=0)
    return ((wide - wide.mean()) / sd.where(sd > 0)).reindex(list(sources)).fillna(0.0)


def _loo_mean(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(targets, sources): each column's mean over the ``known`` rows other than the row's own
    (NaN where there is none): a leave-one-target-out mean."""
    measured = known[:, None] & np.isfinite(values)
    filled = np.where(measured, values, 0.0)
    total = filled.sum(axis=0)[None, :] - filled
    count = measured.sum(axis=0)[None, :] - measured
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class Panel:
    """Seed-mean truths and within-target z-scores, target x source, at one budget.

    The z-scores of a target depend on its own scores alone, so they are computed once; what
    a fit on a subset of targets changes is only the history terms, masked means.
    """

    targets: tuple[str, ...]
    sources: tuple[str, ...]
    estimators: tuple[str, ...]
    truth: np.ndarray  # (targets, sources), NaN where not measured
    z: np.ndarray  # (targets, sources, estimators)

    @classmethod
    def build(cls, scores: pd.DataFrame, truths: pd.DataFrame, estimators: Sequence[str]) -> Panel:
        targets = tuple(sorted(str(t) for t in truths["target"].unique()))
        sources = tuple(sorted(str(s) for s in truths["source"].unique()))
        wide = truths.pivot_table(index="target", columns="source", values="truth")
        truth = wide.reindex(index=list(targets), columns=list(sources)).to_numpy(dtype=float)
        z = np.zeros((len(targets), len(sources), len(estimators)))
        for i, target in enumerate(targets):
            here = scores.loc[scores["target"].eq(target)]
            z[i] = _zscores(here, sources, estimators).to_numpy(dtype=float)
        return cls(targets, sources, tuple(estimators), truth, z)

    def history(self, known: np.ndarray) -> np.ndarray:
        """Each source's mean truth on the ``known`` targets other than the row's own: the
        history baseline, leave-one-target-out."""
        return _loo_mean(self.truth, known)

    @property
    def levels(self) -> np.ndarray:
        """Each target's mean truth over its measured sources (its difficulty)."""
        measured = np.isfinite(self.truth)
        total = np.where(measured, self.truth, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(measured.any(axis=1), total / measured.sum(axis=1), np.nan)

    def relative_history(self, known: np.ndarray) -> np.ndarray:
        """Each source's mean deviation from the target mean on the ``known`` targets other
        than the row's own: history with every target's difficulty taken out."""
        return _loo_mean(self.truth - self.levels[:, None], known)

    def mask(self, exclude: str | None = None) -> np.ndarray:
        return np.array([t != exclude for t in self.targets])


@dataclass(frozen=True)
class SelectionModel:
    """A fitted within-target ridge (see the module docstring), one budget."""

    budget: str
    estimators: tuple[str, ...]
    alpha: float
    level: float  # coverage the interval aims at
    coef: tuple[float, ...]  # per estimator, then relative history (within-target z units)
    history_scale: float  # SD of relative history over the training rows
    target_level: float  # mean accuracy of a training target
    target_spread: float  # mean within-target SD of accuracy
    half_width: float  # of the prediction interval; inf with too few targets
    n_targets: int
    n_rows: int
    n_residuals: int

    def order(self, z: np.ndarray, relative_history: np.ndarray) -> np.ndarray:
        """The within-target z of accuracy the model predicts for one target's candidates from
        their estimator z-scores ``z`` (n, estimators) and ``relative_history`` (n,). History
        is scaled by the training rows' SD, not the candidates', so a source's prediction
        does not depend on which other candidates are asked about."""
        rel = np.asarray(relative_history, dtype=float)
        x = np.column_stack([np.asarray(z, dtype=float).reshape(len(rel), -1),
                             rel / self.history_scale])  # fmt: skip
        # rounded: sources tied on every input stay tied instead of being ordered by float noise
        return np.round(x @ np.asarray(self.coef), 12)

    def predict_arrays(self, z: np.ndarray, relative_history: np.ndarray) -> np.ndarray:
        """Predicted accuracy of one target's candidates, inside [0, 1]."""
        order = self.order(z, relative_history)
        return np.clip(self.target_level + self.target_spread * order, 0.0, 1.0)

    def interval(self, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The prediction interval intersected with [0, 1], where an accuracy lies."""
        return (
            np.clip(predicted - self.half_width, 0.0, 1.0),
            np.clip(predicted + self.half_width, 0.0, 1.0),
        )

    def formula(self) -> str:
        """The fitted model in one line."""
        terms = [
            f"{c:+.3f} z({name})"
            for name, c in zip([*self.estimators, "history"], self.coef, strict=True)
        ]
        return (
            f"z(accuracy within the target) = {' '.join(terms)}; accuracy = "
            f"{self.target_level:.3f} + {self.target_spread:.3f} x that"
        )


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge without an intercept (Hoerl & Kennard 1970): ``(X'X + alpha I) beta = X'y``; the
    within transform already centred every target."""
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def pooled_quantile(residuals: Sequence[np.ndarray], level: float) -> float:
    """Half-width of the interval: the ``level`` quantile of absolute held-out residuals, each
    held-out target weighted equally whatever its number of sources (the CDF pooling of Dunn,
    Wasserman & Ramdas 2022, JASA 118(541), "Distribution-free prediction sets for two-layer
    hierarchical models"). inf with residuals from fewer than 2 targets: one target says
    nothing about how much a new target's level may differ."""
    groups = [np.abs(np.asarray(r, dtype=float)) for r in residuals if len(r)]
    if len(groups) < 2:
        return math.inf
    values = np.concatenate(groups)
    weights = np.concatenate([np.full(len(g), 1.0 / (len(groups) * len(g))) for g in groups])
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cdf, level - 1e-12)])


def _fit(
    panel: Panel,
    known: np.ndarray,
    budget: str,
    alpha: float,
    level: float,
    interval: bool = True,
) -> SelectionModel:
    """Fit on the ``known`` targets; with ``interval``, the half-width from the residuals of
    refits that each hold one known target out (see the module docstring)."""
    relative, levels = panel.relative_history(known), panel.levels
    zs, hs, ys, spreads = [], [], [], []
    for i in np.flatnonzero(known):
        truth = panel.truth[i]
        measured = np.isfinite(truth)
        spread = truth[measured].std() if measured.sum() >= 2 else 0.0
        ok = measured & np.isfinite(relative[i])
        if ok.sum() < 2 or spread == 0:  # nothing to order on this target
            continue
        spreads.append(spread)
        zs.append(panel.z[i][ok])
        hs.append(relative[i][ok])
        ys.append((truth[ok] - levels[i]) / spread)
    n_rows = sum(len(y) for y in ys)
    if n_rows < MIN_SOURCES:
        raise ValueError(
            f"only {n_rows} (source, target) pair(s) at {budget} have a truth and a history "
            "from another target"
        )
    history = np.concatenate(hs)
    scale = float(history.std()) if history.std() > 0 else 1.0
    x = np.column_stack([np.vstack(zs), history / scale])
    beta = _ridge(x, np.concatenate(ys), alpha)
    model = SelectionModel(
        budget, panel.estimators, alpha, level, tuple(float(b) for b in beta), scale,
        float(np.nanmean(levels[known])), float(np.mean(spreads)), math.inf, len(ys), n_rows, 0,
    )  # fmt: skip
    if not interval:
        return model
    residuals: list[np.ndarray] = []
    for i in np.flatnonzero(known):
        rest = known.copy()
        rest[i] = False
        try:
            sub = _fit(panel, rest, budget, alpha, 0.5, interval=False)
        except ValueError:
            continue
        rel = panel.relative_history(rest)[i]
        ok = np.isfinite(panel.truth[i]) & np.isfinite(rel)
        if ok.sum() >= 2:
            residuals.append(panel.truth[i][ok] - sub.predict_arrays(panel.z[i][ok], rel[ok]))
    return replace(
        model, half_width=pooled_quantile(residuals, level), n_residuals=sum(map(len, residuals))
    )


def fit_panel(panel: Panel, budget: str, alpha: float = 1.0, level: float = 0.9) -> SelectionModel:
    """Fit on every target of ``panel``; ValueError when too few pairs have a history."""
    return _fit(panel, panel.mask(), budget, alpha, level)


def fit_selection_model(
    estimates: pd.DataFrame,
    truth: pd.DataFrame,
    budget: str,
    estimators: Sequence[str] | None = None,
    alpha: float = 1.0,
    level: float = 0.9,
) -> SelectionModel:
    """Fit the model on every target of ``truth`` at ``budget`` (see the module docstring).

    ``estimates`` and ``truth`` are seed-level frames shaped like ``Views.estimates`` and
    ``Views.truth``; ``estimators`` defaults to :func:`feature_estimators`. Raises ValueError
    when fewer than 3 (source, target) pairs have both a truth and a history.
    """
    scores, truths = seed_means(estimates, truth, budget)
    names = list(estimators) if estimators is not None else feature_estimators(scores, truths)
    return fit_panel(Panel.build(scores, truths, names), budget, alpha, level)


def _weighted_tau(score: np.ndarray, truth: np.ndarray) -> float:
    """``scipy.stats.weightedtau`` as in ``estimator_agreement`` (Vigna 2015); NaN if constant."""
    if score.size < 2 or np.ptp(score) == 0 or np.ptp(truth) == 0:
        return float("nan")
    return float(sps.weightedtau(score, truth).statistic)


def loto_validation(
    estimates: pd.DataFrame,
    truth: pd.DataFrame,
    budget: str,
    estimators: Sequence[str] | None = None,
    alpha: float = 1.0,
    level: float = 0.9,
) -> pd.DataFrame:
    """Leave one target out: fit on the others, rank the held-out target's sources, compare.

    Per held-out target, the model's weighted tau against the seed-mean truth beside the weighted
    tau of every single estimator and baseline (history, parameter count, reported accuracy) on
    the same sources (those with a truth and a history; an estimator needs a score on >= 3 of
    them). The model's interval comes from refits inside the other targets only, so its coverage
    here is an honest check. Columns: target, budget, method, kind ("model", "estimator",
    "baseline"), n_sources, weighted_tau, coverage (model rows: share of held-out truths inside
    the interval).
    """
    scores, truths = seed_means(estimates, truth, budget)
    names = list(estimators) if estimators is not None else feature_estimators(scores, truths)
    panel = Panel.build(scores, truths, names)
    rows = []
    for i, target in enumerate(panel.targets):
        known = panel.mask(target)
        try:
            model = _fit(panel, known, budget, alpha, level)
        except ValueError:
            continue
        history = panel.history(known)[i]
        relative = panel.relative_history(known)[i]
        ok = np.isfinite(panel.truth[i]) & np.isfinite(history)
        if ok.sum() < MIN_SOURCES:
            continue
        t, h = panel.truth[i][ok], np.round(history[ok], 12)  # equal means tie, as in order()
        order = model.order(panel.z[i][ok], relative[ok])
        low, high = model.interval(model.predict_arrays(panel.z[i][ok], relative[ok]))
        inside = (low <= t) & (t <= high)
        head = [target, budget]
        n = int(ok.sum())
        rows.append([*head, MODEL, "model", n, _weighted_tau(order, t), float(inside.mean())])
        rows.append([*head, HISTORY, "baseline", n, _weighted_tau(h, t), np.nan])
        here = scores.loc[scores["target"].eq(target) & scores["estimator"].ne(HISTORY)]
        kept = [s for s, keep in zip(panel.sources, ok, strict=True) if keep]
        for name, part in here.groupby("estimator", sort=True):
            s = part.set_index("source")["score"].reindex(kept).to_numpy(dtype=float)
            fin = np.isfinite(s)
            if fin.sum() < MIN_SOURCES:
                continue
            kind = "baseline" if name in BASELINES else "estimator"
            rows.append([*head, name, kind, int(fin.sum()), _weighted_tau(s[fin], t[fin]), np.nan])
    return pd.DataFrame(rows, columns=VALIDATION_COLUMNS)


def validation_summary(per_target: pd.DataFrame) -> pd.DataFrame:
    """Per method, over the targets the model was validated on: mean, min and max weighted tau.

    Columns: method, kind, n_targets (with a finite tau), mean_tau, min_tau, max_tau, coverage
    (the model's pooled interval coverage). Sorted best first.
    """
    cols = ["method", "kind", "n_targets", "mean_tau", "min_tau", "max_tau", "coverage"]
    if per_target.empty:
        return pd.DataFrame(columns=cols)
    model = per_target.loc[per_target["method"].eq(MODEL)]
    same = per_target.loc[per_target["target"].isin(model["target"])]
    same = same.loc[np.isfinite(same["weighted_tau"].to_numpy(dtype=float))]
    out = same.groupby(["method", "kind"], as_index=False).agg(
        n_targets=("target", "nunique"),
        mean_tau=("weighted_tau", "mean"),
        min_tau=("weighted_tau", "min"),
        max_tau=("weighted_tau", "max"),
    )
    weights = model["n_sources"].to_numpy(dtype=float)
    cover = float(np.average(model["coverage"], weights=weights)) if weights.sum() else np.nan
    out["coverage"] = np.where(out["method"].eq(MODEL), cover, np.nan)
    return out.sort_values(["mean_tau", "method"], ascending=[False, True], ignore_index=True)[cols]


def beats_history(summary: pd.DataFrame) -> bool:
    """Whether the model's held-out mean weighted tau is at least the history baseline's (a
    tie counts); True when either was not measured, since then nothing speaks against it."""
    taus = summary.set_index("method")["mean_tau"] if len(summary) else pd.Series(dtype=float)
    if MODEL not in taus or HISTORY not in taus:
        return True
    return bool(taus[MODEL] >= taus[HISTORY] - TIE)


def verdict(summary: pd.DataFrame, budget: str) -> str:
    """One plain sentence: does the fitted model beat every single ranking on held-out targets?"""
    model = summary.loc[summary["method"].eq(MODEL)]
    others = summary.loc[summary["method"].ne(MODEL)]
    if model.empty:
        return f"no target at {budget} could be held out and predicted: no validation."
    m = model.iloc[0]
    if others.empty:
        return f"the model's mean weighted tau is {m.mean_tau:.3f}; nothing to compare it with."
    best = others.iloc[0]
    head = (
        f"Holding out one target at a time ({int(m.n_targets)} targets at {budget}), the fitted "
        f"model's mean weighted tau is {m.mean_tau:.3f}; the best single ranking, {best.method}, "
        f"has {best.mean_tau:.3f}"
    )
    if np.isclose(m.mean_tau, best.mean_tau, atol=TIE):
        return head + ": they tie."
    if m.mean_tau > best.mean_tau:
        return head + ": the model wins."
    return head + f": {best.method} wins, the model does not beat it."


def predict_target(
    model: SelectionModel,
    scores: pd.DataFrame,
    truth: pd.DataFrame,
    target: str,
    sources: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rank a new target's candidates.

    ``scores`` has columns source, estimator, score (e.g. from ``rank_sources``; may be empty
    when the model uses no estimator), ``truth`` the seed-level truths of the stores
    (``target``'s own are ignored), ``sources`` the candidates (default: those in ``scores``).
    Columns: rank (NaN without history), source, predicted, low, high, order (the within-target
    z the model predicts), history (mean accuracy on the other targets), then per model
    estimator its raw score and ``z_<name>``.
    """
    sc = scores.reindex(columns=["source", "estimator", "score"])
    sc = sc.assign(score=pd.to_numeric(sc["score"], errors="coerce"))
    sc = sc.loc[np.isfinite(sc["score"].to_numpy(dtype=float))]
    sc = sc.groupby(["source", "estimator"], as_index=False)["score"].mean()
    truths = _truth_means(truth, model.budget)
    truths = truths.loc[truths["target"].ne(target)]
    names = sorted({str(s) for s in (sources if sources is not None else scores["source"])})
    design = _zscores(sc, names, model.estimators)
    deviation = truths["truth"] - truths.groupby("target")["truth"].transform("mean")
    relative = deviation.groupby(truths["source"]).mean().reindex(names).to_numpy(dtype=float)
    history = truths.groupby("source")["truth"].mean().reindex(names).to_numpy(dtype=float)
    has = np.isfinite(relative)
    z = design.to_numpy(dtype=float)
    out = pd.DataFrame({"source": names})
    for column in ("predicted", "low", "high", "order"):
        out[column] = np.nan
    if has.any():
        predicted = model.predict_arrays(z[has], relative[has])
        low, high = model.interval(predicted)
        out.loc[has, "predicted"], out.loc[has, "low"], out.loc[has, "high"] = predicted, low, high
        out.loc[has, "order"] = model.order(z[has], relative[has])
    out["history"] = history
    raw = sc.pivot_table(index="source", columns="estimator", values="score").reindex(names)
    for name in model.estimators:
        out[name] = raw[name].to_numpy(dtype=float) if name in raw else np.nan
        out[f"z_{name}"] = design[name].to_numpy(dtype=float)
    out["rank"] = out["order"].rank(ascending=False, method="min").astype("Int64")
    out = out.sort_values(["order", "source"], ascending=[False, True], na_position="last")
    return out[["rank", *[c for c in out.columns if c != "rank"]]].reset_index(drop=True)


def pick_budget(truth: pd.DataFrame, budget: str | None) -> str:
    """The budget to model: the one given, or the stores' only budget with truths."""
    budgets = sorted({str(b) for b in truth["budget"]}) if len(truth) else []
    if budget is not None:
        if budget not in budgets:
            known = ", ".join(budgets) or "none"
            raise AtlbenchError(
                f"no fine-tuning truths at budget {budget!r}; the stores have: {known}"
            )
        return budget
    if len(budgets) == 1:
        return budgets[0]
    if not budgets:
        return ""
    raise AtlbenchError(
        f"the stores have truths at several budgets ({', '.join(budgets)}): pick one with --budget"
    )
