"""Report figures as matplotlib ``Figure`` objects (and base64 data URIs for the report).

Figures are plain ``matplotlib.figure.Figure`` objects, never pyplot state: nothing here picks a
backend, so a notebook user's backend is left alone, a figure is freed with its last reference,
and a notebook displays it inline. In the report they are embedded as
``<img src="data:image/svg+xml;base64,...">``: the report stays one file with no network
fetches, and a hostile model name inside an image can never run as script.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

SIGNIFICANT = "(significant)"
NOMINAL = "(nominal)"


def figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Figure, Any]:
    """A new figure with ``ncols`` axes side by side, outside pyplot."""
    fig = Figure(figsize=figsize)  # the SVG is cropped to its content (bbox_inches="tight")
    return fig, fig.subplots(1, ncols) if ncols > 1 else fig.subplots()


def to_data_uri(fig: Figure) -> str:
    """The figure as an SVG data URI, its text kept as text (the browser draws the glyphs; as
    outlines it was most of the report's size) and without a timestamp (the same data, the
    same bytes)."""
    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def learning_curves(summary: pd.DataFrame, records: pd.DataFrame, target: str) -> Figure | None:
    """Accuracy vs labelled examples, one line per (source, strategy); baselines dashed."""
    rows = summary[summary["target"] == target]
    if rows.empty or rows["n_train"].nunique() < 2:
        return None
    roles = records.drop_duplicates(["source", "strategy"]).set_index(["source", "strategy"])[
        "role"
    ]
    fig, ax = figure((6.4, 3.8))
    for (source, strategy), grp in rows.groupby(["source", "strategy"], sort=False):
        grp = grp.sort_values("n_train")
        dashed = roles.get((source, strategy), "transfer") != "transfer"
        ax.errorbar(
            grp["n_train"],
            grp["mean"],
            yerr=[
                grp["mean"] - grp["ci_low"].fillna(grp["mean"]),
                grp["ci_high"].fillna(grp["mean"]) - grp["mean"],
            ],
            linestyle="--" if dashed else "-",
            marker="o",
            capsize=3,
            label=f"{source} / {strategy}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{target}: accuracy vs label budget (95% CI: seeds + test examples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def gain_heatmaps(gains: pd.DataFrame) -> dict[str, Figure]:
    """One heatmap per label budget: rows are recipes (source / strategy), columns targets, the
    colour and number are the same-algorithm gain in points (transfer minus the same algorithm
    without the source, Wang et al. 2019). ``**`` marks a significant gain after the multiple-
    testing correction, ``*`` a nominal one (CI excludes zero, correction not passed); cells
    with no mark are not significant. The colour scale is symmetric around zero."""
    out: dict[str, Figure] = {}
    if gains.empty:
        return out
    g = gains.dropna(subset=["gain_mean"])
    for budget, grp in g.groupby("budget", sort=False):
        grp = grp.assign(recipe=grp["source"].astype(str) + " / " + grp["strategy"].astype(str))
        values = (
            grp.pivot_table(index="recipe", columns="target", values="gain_mean", aggfunc="first")
            * 100
        )
        verdicts = grp.pivot_table(
            index="recipe", columns="target", values="verdict", aggfunc="first"
        )
        fig, ax = figure((1.8 + 1.3 * values.shape[1], 1.0 + 0.42 * values.shape[0]))
        grid = values.to_numpy()
        limit = float(np.nanmax(np.abs(grid))) or 1.0
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(values.shape[1]), values.columns, rotation=30, ha="right")
        ax.set_yticks(range(values.shape[0]), values.index, fontsize=7)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                value, verdict = grid[i, j], str(verdicts.iat[i, j])
                if not np.isfinite(value):
                    continue
                mark = "**" if SIGNIFICANT in verdict else "*" if NOMINAL in verdict else ""
                dark = abs(value) > 0.55 * limit  # white text on the saturated end of RdBu
                ax.text(j, i, f"{value:+.1f}{mark}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")  # fmt: skip
        fig.colorbar(image, ax=ax, label="gain (points)")
        ax.set_title(f"Gain over the same algorithm without the source, {budget}", fontsize=9)
        out[str(budget)] = fig
    return out


def cost_plot(points: pd.DataFrame) -> Figure | None:
    """Accuracy against the whole cost of a cell (every trial plus feature extraction, seconds,
    log scale); Pareto-optimal recipes per (target, budget) are ringed."""
    if points.empty:
        return None
    pts = points.dropna(subset=["cost_s", "mean_acc"])
    pts = pts[pts["cost_s"] > 0]
    if pts.empty:
        return None
    fig, ax = figure((6.0, 3.6))
    for strategy, grp in pts.groupby("strategy"):
        ax.scatter(grp["cost_s"], grp["mean_acc"], label=str(strategy), s=24)
    front = pts[pts["pareto"].astype(bool)] if "pareto" in pts else pts.iloc[:0]
    ax.scatter(front["cost_s"], front["mean_acc"], s=80, facecolors="none", edgecolors="black")
    ax.set_xscale("log")
    ax.set_xlabel("cost per cell (s): all trials + feature extraction")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Accuracy vs cost (ringed: Pareto-optimal per target and budget)", fontsize=9)
    return fig


def estimator_scatter(scores: pd.DataFrame, truth: pd.DataFrame, estimator: str) -> Figure | None:
    """One estimator's seed-mean score against each source's seed-mean truth (the suite's
    truth strategy), per target, at every budget."""
    s = scores[(scores["estimator"] == estimator) & scores["score"].notna()]
    if s.empty:
        return None
    keys = ["source", "target", "budget"]
    mean_s = s.groupby(keys, as_index=False)["score"].mean()
    mean_t = truth.groupby(keys, as_index=False)["truth"].mean()
    merged = mean_s.merge(mean_t, on=keys)
    if merged.empty:
        return None
    fig, ax = figure((5.0, 3.4))
    for (target, budget), grp in merged.groupby(["target", "budget"]):
        ax.scatter(grp["score"], grp["truth"], label=f"{target} ({budget})")
        for row in grp.itertuples():
            ax.annotate(str(row.source), (row.score, row.truth), fontsize=7)
    ax.set_xlabel(f"{estimator} score (on the budgeted labels)")
    ax.locator_params(axis="x", nbins=4)  # long tick labels (e.g. LEEP near -0.693) overlapped
    ax.set_ylabel("measured accuracy (truth strategy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def cka_heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str) -> Figure:
    fig, ax = figure((1.5 + 0.35 * len(cols), 1.2 + 0.3 * len(rows)))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma", origin="lower")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    fig.colorbar(image, ax=ax, label="CKA")
    ax.set_title(title, fontsize=8)
    return fig


def layer_change_curve(curves: dict[str, tuple[list[str], list[float]]]) -> Figure | None:
    """1 - CKA(pre-trained, fine-tuned) per layer: how far fine-tuning moved each block."""
    if not curves:
        return None
    fig, ax = figure((6.0, 3.4))
    ticks: list[str] = []
    for label, (layers, values) in curves.items():
        ax.plot(range(len(values)), values, marker="o", label=label)
        ticks = layers
    ax.set_xticks(range(len(ticks)), ticks, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("1 - CKA (pre vs post fine-tune)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_title("What fine-tuning changed, layer by layer")
    return fig


def domain_gap_plot(gap: pd.DataFrame) -> Figure | None:
    """Gain over the same algorithm without the source against the distance between the
    source's held-out pre-training data and the target, on the reference ruler."""
    pts = gap.dropna(subset=["mmd", "gain"])
    if pts.empty:
        return None
    fig, ax = figure((6.0, 3.6))
    for target, grp in pts.groupby("target", sort=False):
        ax.scatter(grp["mmd"], grp["gain"] * 100, label=str(target), s=30)
        row: Any  # the stubs type every field of a row as any pandas scalar
        for row in grp.itertuples():
            ax.annotate(str(row.source), (row.mmd, row.gain * 100), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    strategy = (
        str(pts["gain_strategy"].dropna().iloc[0]) if pts["gain_strategy"].notna().any() else ""
    )
    ax.set_xlabel(f"MMD² on the reference ruler ({pts['embedding'].iloc[0]})")
    ax.set_ylabel(f"gain of {strategy} (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="target", title_fontsize=7)
    ax.set_title("Does transfer help less when the target is further away?", fontsize=10)
    return fig
