"""``atlbench recommend``: predict each candidate source's fine-tuned accuracy on a new target.

The model, fitted per label budget on the targets already in one or more results stores::

    truth[s, t] = b0 + sum_k beta_k * z_k[s, t] + gamma * zh[s, t] + error

``truth`` is the seed-mean accuracy of the suite's tuned fine-tuning recipe (``Views.truth``);
``z_k`` is estimator ``k``'s seed-mean score standardised over target ``t``'s candidate sources
(raw scores are not on one scale across targets: LogME, for one, moves with the class count);
``zh`` is the history term (the source's mean truth on the other training targets,
:func:`atlbench.analysis.selection.history_scores`) standardised over the training rows. The
coefficients are a ridge estimate (Hoerl & Kennard 1970, Technometrics 12(1)), so correlated
estimators share weight instead of cancelling.

This is a simplified take on the "Back to Bayes" model of Chaves et al. (2024, "Back to the
Basics on Predicting Transfer Performance", arXiv:2405.20420), a three-level Bayesian
hierarchical regression that fuses several scorers with the sources' ImageNet accuracy. Here:
one pooled level (no per-target coefficients), the posterior mode under a Gaussian prior (ridge)
instead of the full posterior, the history term in place of ImageNet accuracy, and a prediction
interval from out-of-target residuals instead of the posterior predictive.

Interval: every training target is held out in turn, the model refitted on the rest, and the
held-out sources' residuals collected (the jackknife of Barber et al. 2021, Ann. Statist. 49(1),
with a target as the unit left out); the half-width is the ``level`` quantile of their absolute
values with every target weighted equally, the CDF pooling of Dunn, Wasserman & Ramdas (2022,
JASA 118(541)) for a new group of a two-layer hierarchy. Holding out a whole target puts the
unknown level of a new target into the residuals, which an in-sample t interval would leave out
(its residuals share each target's offset, so they understate the spread); a bootstrap over
targets would cost a refit per draw for the same information. Its coverage is asymptotic in the
number of targets: with ten it runs a few points under the stated level.

Sources and targets are matched across stores by id: the same source id in two stores is taken
to be the same model, and truths of one (source, target, budget) found in several stores are
averaged.

For the new target, ``rank_sources`` scores the candidates on the target's whole train split,
while the stored scores were computed on each budget's labelled subsets: the within-target
standardisation removes the difference in scale, not a difference in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from atlbench.analysis.correlation import MIN_SOURCES
from atlbench.analysis.selection import HISTORY
from atlbench.errors import AtlbenchError
from atlbench.report.views import BASELINES
from atlbench.store import Store

MIN_TARGETS = 3  # one held out, two to fit: the fewest that give every training row a history
MODEL = "recommend"
NOT_FEATURES = (*BASELINES, HISTORY)
VALIDATION_COLUMNS = ["target", "budget", "method", "kind", "n_sources", "weighted_tau", "coverage"]


def load_evidence(results_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(estimates, truth)`` of every store, as ``Views.estimates`` and ``Views.truth`` give
    them (each store's own plan and truth strategy), concatenated; a missing store is a
    one-line error."""
    from atlbench.report.views import Views

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


def _seed_means(
    estimates: pd.DataFrame, truth: pd.DataFrame, budget: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    part = scores.loc[scores["estimator"].isin(estimators)]
    wide = part.pivot_table(index="source", columns="estimator", values="score")
    wide = wide.reindex(columns=list(estimators))
    sd = wide.std(ddof=0)
    return ((wide - wide.mean()) / sd.where(sd > 0)).reindex(list(sources)).fillna(0.0)


@dataclass(frozen=True)
class Panel:
    """Seed-mean truths and within-target z-scores, target x source, at one budget.

    The z-scores of a target depend on its own scores alone, so they are computed once; what
    a fit on a subset of targets changes is only the history term, a masked mean.
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
        """(targets, sources): each source's mean truth over the ``known`` targets other than
        the row's own (NaN where there is none): the history term, leave-one-target-out."""
        measured = known[:, None] & np.isfinite(self.truth)
        values = np.where(measured, self.truth, 0.0)
        total = values.sum(axis=0)[None, :] - values
        count = measured.sum(axis=0)[None, :] - measured
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def mask(self, exclude: str | None = None) -> np.ndarray:
        return np.array([t != exclude for t in self.targets])


@dataclass(frozen=True)
class SelectionModel:
    """A fitted ridge of truth on z-scored estimators and standardised history, one budget."""

    budget: str
    estimators: tuple[str, ...]
    alpha: float
    level: float
    intercept: float
    coef: tuple[float, ...]  # per estimator, then history (per standardised unit)
    history_mean: float
    history_sd: float
    half_width: float  # of the prediction interval; inf with too few targets
    n_targets: int
    n_rows: int
    n_residuals: int

    def predict_arrays(self, z: np.ndarray, history: np.ndarray) -> np.ndarray:
        h = (history - self.history_mean) / self.history_sd
        return self.intercept + np.column_stack([z, h]) @ np.asarray(self.coef)

    def predict(self, design: pd.DataFrame) -> pd.DataFrame:
        """Predicted accuracy and interval per row of a design (columns: the estimators' z,
        history), for sources with a history."""
        pred = self.predict_arrays(
            design[list(self.estimators)].to_numpy(dtype=float),
            design["history"].to_numpy(dtype=float),
        )
        return pd.DataFrame(
            {"predicted": pred, "low": pred - self.half_width, "high": pred + self.half_width},
            index=design.index,
        )

    def formula(self) -> str:
        """The fitted model in one line, coefficients per standardised unit."""
        terms = [f"{self.intercept:.3f}"]
        for name, c in zip([*self.estimators, "history"], self.coef, strict=True):
            terms.append(f"{c:+.3f} z({name})")
        return "accuracy = " + " ".join(terms)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """Ridge with an unpenalised intercept (Hoerl & Kennard 1970): centre, then solve
    ``(X'X + alpha I) beta = X'y``."""
    xm, ym = x.mean(axis=0), y.mean()
    xc = x - xm
    beta = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return float(ym - xm @ beta), beta


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
    history = panel.history(known)
    rows = known[:, None] & np.isfinite(panel.truth) & np.isfinite(history)
    if rows.sum() < MIN_SOURCES:
        raise ValueError(
            f"only {int(rows.sum())} (source, target) pair(s) at {budget} have a truth and a "
            "history from another target"
        )
    h = history[rows]
    h_mean, h_sd = float(h.mean()), float(h.std())
    h_sd = h_sd if h_sd > 0 else 1.0
    x = np.column_stack([panel.z[rows], (h - h_mean) / h_sd])
    intercept, beta = _ridge(x, panel.truth[rows], alpha)
    residuals: list[np.ndarray] = []
    if interval:
        for i in np.flatnonzero(known):
            rest = known.copy()
            rest[i] = False
            try:
                sub = _fit(panel, rest, budget, alpha, 0.5, interval=False)
            except ValueError:
                continue
            h_rest = panel.history(rest)[i]
            ok = np.isfinite(panel.truth[i]) & np.isfinite(h_rest)
            if ok.any():
                pred = sub.predict_arrays(panel.z[i][ok], h_rest[ok])
                residuals.append(panel.truth[i][ok] - pred)
    half = pooled_quantile(residuals, level)
    n = sum(len(r) for r in residuals)
    return SelectionModel(
        budget,
        panel.estimators,
        alpha,
        level,
        intercept,
        tuple(float(b) for b in beta),
        h_mean,
        h_sd,
        half,
        int(rows.any(axis=1).sum()),
        int(rows.sum()),
        n,
    )


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
    scores, truths = _seed_means(estimates, truth, budget)
    names = list(estimators) if estimators is not None else feature_estimators(scores, truths)
    panel = Panel.build(scores, truths, names)
    return _fit(panel, panel.mask(), budget, alpha, level)


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
    scores, truths = _seed_means(estimates, truth, budget)
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
        ok = np.isfinite(panel.truth[i]) & np.isfinite(history)
        if ok.sum() < MIN_SOURCES:
            continue
        t, h = panel.truth[i][ok], history[ok]
        pred = model.predict_arrays(panel.z[i][ok], h)
        inside = np.abs(t - pred) <= model.half_width
        head = [target, budget]
        n = int(ok.sum())
        rows.append([*head, MODEL, "model", n, _weighted_tau(pred, t), float(inside.mean())])
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
    if np.isclose(m.mean_tau, best.mean_tau, atol=5e-4):
        return head + ": they tie."
    if m.mean_tau > best.mean_tau:
        return head + ": the model wins."
    return head + f": {best.method} wins, the model does not beat it."


def predict_target(
    model: SelectionModel, scores: pd.DataFrame, truth: pd.DataFrame, target: str
) -> pd.DataFrame:
    """Rank a new target's candidates: ``scores`` has columns source, estimator, score (e.g.
    from ``rank_sources``), ``truth`` the seed-level truths of the stores (``target``'s own are
    ignored). Columns: rank (NaN without history), source, predicted, low, high, history, then
    per model estimator its raw score and ``z_<name>``."""
    sc = scores.assign(score=pd.to_numeric(scores["score"], errors="coerce"))
    sc = sc.loc[np.isfinite(sc["score"].to_numpy(dtype=float))]
    sc = sc.groupby(["source", "estimator"], as_index=False)["score"].mean()
    truths = _truth_means(truth, model.budget)
    truths = truths.loc[truths["target"].ne(target)]
    sources = sorted(str(s) for s in scores["source"].unique())
    design = _zscores(sc, sources, model.estimators)
    design["history"] = truths.groupby("source")["truth"].mean().reindex(design.index)
    has = np.isfinite(design["history"].to_numpy(dtype=float))
    pred = model.predict(design.loc[has]).reindex(design.index)
    raw = sc.pivot_table(index="source", columns="estimator", values="score")
    design.index.name = None
    pred.index.name = None
    out = pd.DataFrame({"source": design.index}, index=design.index).join(pred)
    out["history"] = design["history"]
    for name in model.estimators:
        out[name] = raw[name].reindex(design.index) if name in raw else np.nan
        out[f"z_{name}"] = design[name]
    out["rank"] = out["predicted"].rank(ascending=False, method="min").astype("Int64")
    out = out.sort_values(["predicted", "source"], ascending=[False, True], na_position="last")
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


def recommend_command(
    results_dirs: Sequence[Path],
    suite_path: Path,
    target: str,
    budget: str | None,
    level: float = 0.9,
    alpha: float = 1.0,
    device: str | None = None,
    echo: Callable[[str], None] = print,
) -> pd.DataFrame | None:
    """The CLI: validate the model on the stores, then rank the suite's sources for ``target``.

    Returns the prediction table (None when it fell back to the estimator ranking).
    """
    from atlbench.estimate import rank_sources, render_ranking
    from atlbench.registry import ESTIMATORS
    from atlbench.study import load_study

    estimates, truth = load_evidence(results_dirs)
    load_study(suite_path).pick("target", [target])  # a target not in the suite: one line
    budget = pick_budget(truth, budget)
    scores, truths = _seed_means(estimates, truth, budget)
    if target in set(truths["target"]):
        echo(
            f"{target} has measured truths in the stores: they are left out of the fit and of "
            "the history"
        )
    scores = scores.loc[scores["target"].ne(target)]
    truths = truths.loc[truths["target"].ne(target)]
    n_targets = truths["target"].nunique()
    if n_targets < MIN_TARGETS:
        echo(
            f"not enough history: {n_targets} other target(s) with fine-tuning truths at "
            f"{budget or 'any budget'} (need {MIN_TARGETS}); showing the estimator ranking"
        )
        render_ranking(rank_sources(suite_path, target, device=device))
        return None
    stored = feature_estimators(scores, truths)
    names = [n for n in stored if n in ESTIMATORS]
    if len(names) < len(stored):
        unknown = ", ".join(n for n in stored if n not in ESTIMATORS)
        echo(f"estimator(s) {unknown} of the stores are not registered here: left out of the model")
    panel = Panel.build(scores, truths, names)
    try:
        model = _fit(panel, panel.mask(), budget, alpha, level)
    except ValueError as err:
        echo(f"not enough history: {err}; showing the estimator ranking")
        render_ranking(rank_sources(suite_path, target, device=device))
        return None
    others = (estimates.loc[estimates["target"].ne(target)], truth.loc[truth["target"].ne(target)])
    summary = validation_summary(loto_validation(*others, budget, names, alpha, level))
    ranking = rank_sources(suite_path, target, names or None, device=device)
    if ranking.empty:
        raise AtlbenchError(f"no source of {suite_path} has the modality of target {target!r}")
    candidates = ranking[["source", "estimator", "score"]]
    table = predict_target(model, candidates, truth, target)
    _render(model, summary, table, len(results_dirs), echo)
    missing = table.loc[table["predicted"].isna(), "source"].tolist()
    if missing:
        echo(
            f"no fine-tuning history at {budget} for {', '.join(missing)} (never measured on "
            "a target of the stores): no prediction; by estimator rank only:"
        )
        render_ranking(ranking.loc[ranking["source"].isin(missing)])
    return table


def _render(
    model: SelectionModel,
    summary: pd.DataFrame,
    table: pd.DataFrame,
    n_stores: int,
    echo: Callable[[str], None],
) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 200
    echo(
        f"model at {model.budget}: ridge (alpha {model.alpha:g}) on {model.n_rows} (source, "
        f"target) pairs from {model.n_targets} targets in {n_stores} store(s); "
        f"{model.formula()}"
    )
    check = Table(
        "method",
        "kind",
        "targets",
        "mean tau_w",
        "min",
        "max",
        title="Leave one target out: weighted tau against measured fine-tuning",
    )
    for r in summary.itertuples():
        check.add_row(
            escape(str(r.method)),
            r.kind,
            str(r.n_targets),
            f"{r.mean_tau:.3f}",
            f"{r.min_tau:.3f}",
            f"{r.max_tau:.3f}",
        )
    console.print(check)
    echo(verdict(summary, model.budget))
    cover = summary.loc[summary["method"].eq(MODEL), "coverage"]
    if len(cover) and np.isfinite(cover.iloc[0]):
        echo(
            f"its {model.level:.0%} intervals held the measured accuracy of "
            f"{cover.iloc[0]:.0%} of the held-out sources"
        )
    level = f"{model.level:.0%} interval"
    ranked = Table(
        "#",
        "source",
        "predicted acc",
        level,
        "history",
        *[f"{n} (z)" for n in model.estimators],
        title="Predicted fine-tuned accuracy",
    )
    for r in table.loc[table["predicted"].notna()].to_dict("records"):
        interval = (
            f"[{r['low']:.3f}, {r['high']:.3f}]"
            if math.isfinite(model.half_width)
            else "n/a (too few held-out residuals)"
        )
        inputs = [
            f"{r[n]:.4g} ({r[f'z_{n}']:+.2f})" if pd.notna(r[n]) else "n/a"
            for n in model.estimators
        ]
        ranked.add_row(
            str(r["rank"]),
            escape(str(r["source"])),
            f"{r['predicted']:.3f}",
            interval,
            f"{r['history']:.3f}",
            *inputs,
        )
    console.print(ranked)
