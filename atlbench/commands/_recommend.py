"""``atlbench recommend``: rank candidate sources for a new target from past results.

Fits :mod:`atlbench.recommend`'s within-target model on the stores, validates it holding out
one target at a time beside the history baseline, falls back to history alone when the model
does not beat it, then ranks the candidates. The new target's data is loaded (and its features
extracted) only when the model in use has a feature-based estimator; a model of history alone
ranks from the stores, without the suite's data, the hub or the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlbench.errors import AtlbenchError
from atlbench.recommend import (
    MIN_TARGETS,
    MODEL,
    Panel,
    SelectionModel,
    beats_history,
    feature_estimators,
    fit_panel,
    load_evidence,
    loto_validation,
    pick_budget,
    predict_target,
    seed_means,
    validation_summary,
    verdict,
)

__all__ = ["recommend_command"]


def _suite_sources(suite_path: Path, target: str) -> list[str]:
    """The suite's source ids, after checking it names ``target``: the suite is parsed, not
    resolved, so no weights or data are touched."""
    import atlbench._components  # noqa: F401  (the suite schema is built from the registries)
    from atlbench.registry import suggest
    from atlbench.suite import load_suite

    suite: Any = load_suite(suite_path)  # its entry lists are built from the registries
    targets = [t.id for t in suite.targets]
    if target not in targets:
        raise AtlbenchError(
            f"{suite_path}: no target {target!r}{suggest(target, targets)}; the suite has: "
            f"{', '.join(targets)}"
        )
    return [s.id for s in suite.sources]


def _estimator_ranking(
    suite_path: Path | None, target: str, device: str | None, reason: str,
    echo: Callable[[str], None],
) -> None:  # fmt: skip
    """Without a model: the estimator ranking of the suite's sources, or a one-line error."""
    if suite_path is None:
        raise AtlbenchError(f"{reason}; give --suite with {target}'s data to rank by estimators")
    from atlbench._estimate import rank_sources, render_ranking

    echo(f"{reason}; showing the estimator ranking")
    render_ranking(rank_sources(suite_path, target, device=device))


def recommend_command(
    results_dirs: Sequence[Path],
    suite_path: Path | None,
    target: str,
    budget: str | None,
    level: float = 0.9,
    alpha: float = 1.0,
    device: str | None = None,
    echo: Callable[[str], None] = print,
) -> pd.DataFrame | None:
    """Validate the model on the stores, then rank the candidates for ``target``.

    Candidates are ``suite_path``'s sources, or without a suite every source of the stores.
    Returns the prediction table (None when it fell back to the estimator ranking).
    """
    import atlbench.estimators  # noqa: F401  (registers the estimators)
    from atlbench.registry import ESTIMATORS

    estimates, truth = load_evidence(results_dirs)
    candidates = _suite_sources(suite_path, target) if suite_path is not None else None
    budget = pick_budget(truth, budget)
    scores, truths = seed_means(estimates, truth, budget)
    if target in set(truths["target"]):
        echo(
            f"{target} has measured truths in the stores: they are left out of the fit and of "
            "the history"
        )
    scores = scores.loc[scores["target"].ne(target)]
    truths = truths.loc[truths["target"].ne(target)]
    n_targets = truths["target"].nunique()
    if n_targets < MIN_TARGETS:
        reason = (
            f"not enough history: {n_targets} other target(s) with fine-tuning truths at "
            f"{budget or 'any budget'} (need {MIN_TARGETS})"
        )
        _estimator_ranking(suite_path, target, device, reason, echo)
        return None
    stored = feature_estimators(scores, truths)
    names = [n for n in stored if n in ESTIMATORS]
    if len(names) < len(stored):
        unknown = ", ".join(n for n in stored if n not in ESTIMATORS)
        echo(f"estimator(s) {unknown} of the stores are not registered here: left out of the model")
    if names and suite_path is None:
        echo(
            f"no --suite, so {target}'s data cannot be scored: the model leaves out "
            f"{', '.join(names)} and ranks by history alone"
        )
        names = []
    others = (estimates.loc[estimates["target"].ne(target)], truth.loc[truth["target"].ne(target)])
    try:
        model = fit_panel(Panel.build(scores, truths, names), budget, alpha, level)
    except ValueError as err:
        _estimator_ranking(suite_path, target, device, f"not enough history: {err}", echo)
        return None
    summary = validation_summary(loto_validation(*others, budget, names, alpha, level))
    if names and not beats_history(summary):
        taus = summary.set_index("method")["mean_tau"]
        echo(
            f"held out, the model with {', '.join(names)} does not beat the history baseline "
            f"(mean weighted tau {taus[MODEL]:.3f} against {taus['baseline_history']:.3f}): it "
            "ranks by history alone instead"
        )
        names = []
        model = fit_panel(Panel.build(scores, truths, []), budget, alpha, level)
        summary = validation_summary(loto_validation(*others, budget, [], alpha, level))
    ranking = None
    if names:  # only now is the target's data needed: its features feed the estimators
        from atlbench._estimate import rank_sources

        ranking = rank_sources(suite_path, target, names, device=device)  # type: ignore[arg-type]
        if ranking.empty:
            raise AtlbenchError(f"no source of {suite_path} has the modality of target {target!r}")
        table = predict_target(model, ranking[["source", "estimator", "score"]], truth, target)
    else:
        echo(f"the model uses no estimator: ranked from the stores alone, {target}'s data unread")
        pool = candidates if candidates is not None else sorted(set(truths["source"]))
        empty = pd.DataFrame(columns=["source", "estimator", "score"])
        table = predict_target(model, empty, truth, target, pool)
    _render(model, summary, table, len(results_dirs), echo)
    missing = table.loc[table["predicted"].isna(), "source"].tolist()
    if missing:
        echo(
            f"no fine-tuning history at {budget} for {', '.join(missing)} (never measured on "
            "a target of the stores): no prediction"
            + ("; by estimator rank only:" if ranking is not None else "")
        )
        if ranking is not None:
            from atlbench._estimate import render_ranking

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
        f"model at {model.budget}: within-target ridge (alpha {model.alpha:g}) on "
        f"{model.n_rows} (source, target) pairs from {model.n_targets} targets in {n_stores} "
        f"store(s); {model.formula()}"
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
    row: Any  # a summary row: the stubs type every field as any pandas scalar
    for row in summary.itertuples():
        check.add_row(
            escape(str(row.method)),
            row.kind,
            str(row.n_targets),
            f"{row.mean_tau:.3f}",
            f"{row.min_tau:.3f}",
            f"{row.max_tau:.3f}",
        )
    console.print(check)
    echo(verdict(summary, model.budget))
    cover = summary.loc[summary["method"].eq(MODEL), "coverage"]
    if len(cover) and np.isfinite(cover.iloc[0]):
        echo(
            f"its {model.level:.0%} intervals held the measured accuracy of "
            f"{cover.iloc[0]:.0%} of the held-out sources; most of their width is the new "
            "target's unknown difficulty, not the order of its sources"
        )
    ranked = Table(
        "#",
        "source",
        "predicted acc",
        f"{model.level:.0%} interval",
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
