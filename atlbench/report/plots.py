"""Report figures (matplotlib, Agg) returned as base64 data URIs.

Figures are embedded as ``<img src="data:image/svg+xml;base64,...">``: the report stays one file
with no network fetches, and a hostile model name inside an image can never run as script.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def to_data_uri(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def learning_curves(summary: pd.DataFrame, target: str) -> str | None:
    """Accuracy vs labelled examples, one line per (source, strategy), scratch dashed."""
    rows = summary[summary["target"] == target]
    if rows.empty or rows["n_train"].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for (source, strategy), grp in rows.groupby(["source", "strategy"], sort=False):
        grp = grp.sort_values("n_train")
        style = "--" if strategy == "scratch" else "-"
        ax.errorbar(
            grp["n_train"],
            grp["mean"],
            yerr=[
                grp["mean"] - grp["ci_low"].fillna(grp["mean"]),
                grp["ci_high"].fillna(grp["mean"]) - grp["mean"],
            ],
            linestyle=style,
            marker="o",
            capsize=3,
            label=f"{source} / {strategy}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{target}: accuracy vs label budget (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return to_data_uri(fig)


def gain_heatmap(gains: pd.DataFrame) -> str | None:
    """Best gain over scratch (points) for each source x target at the smallest budget."""
    if gains.empty:
        return None
    g = gains.dropna(subset=["gain_mean"]).copy()
    if g.empty:
        return None
    best = g.sort_values("gain_mean", ascending=False).groupby(["source", "target"]).head(1)
    pivot = best.pivot(index="source", columns="target", values="gain_mean") * 100
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * pivot.shape[1], 1.0 + 0.5 * pivot.shape[0]))
    limit = float(np.nanmax(np.abs(pivot.to_numpy()))) or 1.0
    image = ax.imshow(pivot.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=30, ha="right")
    ax.set_yticks(range(pivot.shape[0]), pivot.index)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            value = pivot.iat[i, j]
            if np.isfinite(value):
                dark = abs(value) > 0.55 * limit  # white text on the saturated end of RdBu
                ax.text(
                    j,
                    i,
                    f"{value:+.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    fig.colorbar(image, ax=ax, label="gain (points)")
    ax.set_title("Best gain over scratch per pair", fontsize=10)
    return to_data_uri(fig)


def pareto_plot(points: pd.DataFrame, x: str, xlabel: str) -> str | None:
    """Accuracy against cost (train time or trainable parameters), Pareto-optimal points ringed."""
    pts = points.dropna(subset=[x, "mean_acc"])
    pts = pts[pts[x] > 0]
    if pts.empty:
        return None
    from atlbench.analysis.efficiency import pareto_front

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for strategy, grp in pts.groupby("strategy"):
        ax.scatter(grp[x], grp["mean_acc"], label=strategy, s=24)
    for _target, grp in pts.groupby(["target", "budget"]):
        mask = pareto_front(grp, x, "mean_acc")
        front = grp[np.asarray(mask)]
        ax.scatter(front[x], front["mean_acc"], s=80, facecolors="none", edgecolors="black")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Accuracy vs {xlabel} (ringed: Pareto-optimal per target and budget)")
    return to_data_uri(fig)


def estimator_scatter(scores: pd.DataFrame, truth: pd.DataFrame, estimator: str) -> str | None:
    """One estimator's score against each source's best fine-tuned accuracy, per target."""
    s = scores[(scores["estimator"] == estimator) & scores["score"].notna()]
    merged = s.merge(truth, on=["source", "target"])
    if merged.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for target, grp in merged.groupby("target"):
        ax.scatter(grp["score"], grp["truth"], label=target)
        for row in grp.itertuples():
            ax.annotate(str(row.source), (row.score, row.truth), fontsize=7)
    ax.set_xlabel(f"{estimator} score")
    ax.locator_params(axis="x", nbins=4)  # long tick labels (e.g. LEEP near -0.693) overlapped
    ax.set_ylabel("best fine-tuned accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_data_uri(fig)


def cka_heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str) -> str:
    fig, ax = plt.subplots(figsize=(1.5 + 0.35 * len(cols), 1.2 + 0.3 * len(rows)))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma", origin="lower")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    fig.colorbar(image, ax=ax, label="CKA")
    ax.set_title(title, fontsize=9)
    return to_data_uri(fig)


def layer_change_curve(curves: dict[str, tuple[list[str], list[float]]]) -> str | None:
    """1 - CKA(pre-trained, fine-tuned) per layer: how far fine-tuning moved each block."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for label, (layers, values) in curves.items():
        ax.plot(range(len(values)), values, marker="o", label=label)
        ticks = layers
    ax.set_xticks(range(len(ticks)), ticks, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("1 - CKA (pre vs post fine-tune)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_title("What fine-tuning changed, layer by layer")
    return to_data_uri(fig)


def domain_gap_plot(gap: pd.DataFrame, distance: str = "mmd") -> str | None:
    """Gain over scratch against the source-to-target distance, one colour per target."""
    pts = gap.dropna(subset=[distance, "gain"])
    if pts.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for target, grp in pts.groupby("target", sort=False):
        ax.scatter(grp[distance], grp["gain"] * 100, label=str(target), s=30)
        for row in grp.itertuples():
            ax.annotate(
                str(row.source),
                (getattr(row, distance), row.gain * 100),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    label = "MMD² (RBF)" if distance == "mmd" else "Fréchet distance"
    ax.set_xlabel(f"{label}: source pre-training data vs target")
    ax.set_ylabel("best gain over scratch (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="target", title_fontsize=7)
    ax.set_title("Does transfer help less when the target is further away?", fontsize=10)
    return to_data_uri(fig)
