"""Every table the report and the CSVs show, computed once from the store's records.

``Views`` is the Python face of a results directory: each attribute is a pandas DataFrame with
documented columns, so a notebook gets exactly what ``leaderboard.csv`` and the HTML report show.
Properties are cached because several sections reuse the same statistics.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from atlbench.analysis import (
    estimator_agreement,
    gain_per_hour,
    ground_truth,
    labels_saved,
    paired_gains,
    probability_of_improvement,
    summarize,
)
from atlbench.report import plots
from atlbench.report.leaderboard import leaderboard

TIMING_COLUMNS = [
    "source",
    "target",
    "strategy",
    "budget",
    "seed",
    "device",
    "dtype",
    "n_train",
    "train_time_s",
    "selection_time_s",
    "time_to_best_s",
    "time_to_90pct_s",
    "compile_time_s",
    "feature_time_s",
    "train_samples_per_s",
    "eval_samples_per_s",
    "peak_mem_mb",
    "trainable_params",
    "total_params",
    "wall_time_s",
]
NEGATIVE_TRANSFER_COLUMNS = [
    "target",
    "budget",
    "source",
    "strategy",
    "arch",
    "n_pairs",
    "mean",
    "scratch_mean",
    "gain_mean",
    "gain_ci_low",
    "gain_ci_high",
    "p_value",
    "p_holm",
    "negative_transfer_gap",
    "verdict",
    "note",
]
FAILURE_COLUMNS = ["source", "target", "strategy", "budget", "seed", "error"]


class Views:
    """Tables over one results directory's records, estimates and artifacts."""

    def __init__(
        self,
        records: pd.DataFrame,
        estimates: pd.DataFrame | None = None,
        artifacts: dict[str, list[dict[str, Any]]] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.records = records
        self._estimates = estimates if estimates is not None else pd.DataFrame()
        self.artifacts = artifacts or {}
        self.meta = meta or {}

    @classmethod
    def from_store(cls, store: Any) -> Views:
        """Only what belongs to the store's current plan, labelled with the current ids.

        A store keeps results of earlier versions of a suite (renamed ids, changed data or
        weights); records are already filtered this way by ``Store.records``, and estimates,
        CKA comparisons and domain gaps get the same treatment here.
        """
        labels = store.meta("estimate_labels", {}) or {}
        estimates = store.estimates()
        if len(estimates):
            estimates = estimates[estimates["key"].isin(list(labels))].copy()
            estimates["source"] = [labels[k][0] for k in estimates["key"]]
            estimates["target"] = [labels[k][1] for k in estimates["key"]]
        records = store.records()
        plan = {r["key"]: r for r in records.to_dict("records")} if len(records) else {}
        cka = []
        for item in store.artifacts("cka"):
            tuned = item.get("cell_a") or item.get("cell_b")  # the fine-tuned cell's key
            if tuned in plan:
                cell = plan[tuned]
                cka.append(item | {k: cell[k] for k in ("source", "target", "strategy", "budget")})
        gap_keys = set(store.meta("domain_gap_keys", []) or [])
        gaps = [g for g in store.artifacts("domain_gap") if g.get("key") in gap_keys]
        return cls(
            records,
            estimates,
            {"cka": cka, "domain_gap": gaps},
            {"suite": store.meta("suite", {}), "skipped_pairs": store.meta("skipped_pairs", [])},
        )

    @property
    def has_results(self) -> bool:
        return not self.records.empty and bool((self.records["status"] == "done").any())

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per (source, target, strategy, budget): mean, std and 95% CI of test accuracy."""
        if not self.has_results:
            return pd.DataFrame()
        return summarize(self.records, "test_acc")

    @cached_property
    def gains(self) -> pd.DataFrame:
        """Paired gains over scratch with CIs, Holm p-values, verdicts and the NTG."""
        if not self.has_results:
            return pd.DataFrame(columns=NEGATIVE_TRANSFER_COLUMNS)
        return paired_gains(self.records, "test_acc")

    @cached_property
    def leaderboard(self) -> pd.DataFrame:
        return leaderboard(self.records if not self.records.empty else pd.DataFrame())

    @cached_property
    def negative_transfer(self) -> pd.DataFrame:
        gains = self.gains
        if gains.empty:
            return pd.DataFrame(columns=NEGATIVE_TRANSFER_COLUMNS)
        return gains[[c for c in NEGATIVE_TRANSFER_COLUMNS if c in gains]]

    @cached_property
    def p_improvement(self) -> pd.DataFrame | None:
        if not self.has_results:
            return None
        table = probability_of_improvement(self.records)
        return table if len(table) else None

    @cached_property
    def labels_saved(self) -> pd.DataFrame | None:
        return labels_saved(self.records) if self.has_results else None

    @cached_property
    def gain_per_hour(self) -> pd.DataFrame | None:
        return gain_per_hour(self.records) if self.has_results else None

    @cached_property
    def failures(self) -> pd.DataFrame:
        if self.records.empty:
            return pd.DataFrame(columns=FAILURE_COLUMNS)
        failed = self.records[self.records["status"] != "done"]
        return failed[[c for c in FAILURE_COLUMNS if c in failed]].reset_index(drop=True)

    @cached_property
    def timing(self) -> pd.DataFrame:
        """One row per finished cell: every clock, throughput and memory figure it recorded."""
        if not self.has_results:
            return pd.DataFrame(columns=TIMING_COLUMNS)
        done = self.records[self.records["status"] == "done"]
        return done.reindex(columns=TIMING_COLUMNS).reset_index(drop=True)

    @cached_property
    def estimates(self) -> pd.DataFrame:
        """Estimator scores per (source, target): source, target, estimator, score, time_s."""
        est = self._estimates
        if est.empty:
            return pd.DataFrame(columns=["source", "target", "estimator", "score", "time_s"])
        est = est[est["status"] == "done"]
        return est[["source", "target", "estimator", "score", "time_s"]].reset_index(drop=True)

    @cached_property
    def truth(self) -> pd.DataFrame:
        """Best measured (non-scratch) accuracy per (source, target): what estimators predict."""
        if not self.has_results:
            return pd.DataFrame(columns=["source", "target", "truth"])
        return ground_truth(self.records)

    @cached_property
    def agreement(self) -> pd.DataFrame | None:
        if self.estimates.empty or self.truth.empty:
            return None
        return estimator_agreement(self.estimates, None, truth=self.truth)

    @cached_property
    def estimator_table(self) -> pd.DataFrame:
        """Scores side by side (one column per estimator) with the measured truth beside them."""
        if self.estimates.empty:
            return pd.DataFrame()
        wide = self.estimates.pivot_table(
            index=["target", "source"], columns="estimator", values="score", aggfunc="mean"
        ).reset_index()
        wide.columns.name = None
        return wide.merge(self.truth, on=["source", "target"], how="left").rename(
            columns={"truth": "best_finetuned_acc"}
        )

    @cached_property
    def estimators_csv(self) -> pd.DataFrame:
        """``estimators.csv``: scores per (target, source, estimator), agreement per estimator."""
        cols = [
            "target",
            "estimator",
            "source",
            "score",
            "time_s",
            "truth",
            "n_sources",
            "weighted_tau",
            "pearson_r",
            "rel_top1",
            "reason",
        ]
        if self.estimates.empty:
            return pd.DataFrame(columns=cols)
        table = self.estimates.merge(self.truth, on=["source", "target"], how="left")
        if self.agreement is not None:
            table = table.merge(self.agreement, on=["target", "estimator"], how="left")
        return table.reindex(columns=cols).sort_values(["target", "estimator", "source"])

    @cached_property
    def environment(self) -> pd.DataFrame:
        """Devices and package versions the records were produced with."""
        if self.records.empty:
            return pd.DataFrame(columns=["what", "value"])
        rows: dict[str, set[str]] = {}
        for col in ("device", "dtype"):
            if col in self.records:
                rows[col] = {str(v) for v in self.records[col].dropna().unique()}
        for versions in self.records.get("versions", pd.Series(dtype=object)).dropna():
            if isinstance(versions, dict):
                for name, version in versions.items():
                    rows.setdefault(name, set()).add(str(version))
        return pd.DataFrame(
            [(k, ", ".join(sorted(v))) for k, v in rows.items()], columns=["what", "value"]
        )

    @cached_property
    def domain_gap(self) -> pd.DataFrame:
        """Source pre-training data vs target train split, beside the best gain over scratch.

        Columns: source, target, mmd (unbiased MMD^2, RBF), mmd_p (permutation p-value), frechet,
        n_source, n_target, best_strategy, gain (that strategy's mean gain over scratch, averaged
        over budgets; NaN without a scratch baseline). Only pairs of the current records.
        """
        cols = ["source", "target", "mmd", "mmd_p", "frechet", "n_source", "n_target"]
        items = self.artifacts.get("domain_gap", [])
        if not items or self.records.empty:
            return pd.DataFrame(columns=[*cols, "best_strategy", "gain"])
        gaps = pd.DataFrame(items).reindex(columns=cols)
        current = self.records[["source", "target"]].drop_duplicates()
        gaps = gaps.merge(current, on=["source", "target"]).drop_duplicates(["source", "target"])
        gains = self.gains.dropna(subset=["gain_mean"]) if not self.gains.empty else self.gains
        if gains.empty:
            best = pd.DataFrame(columns=["source", "target", "best_strategy", "gain"])
        else:
            keys = ["source", "target"]
            per = gains.groupby([*keys, "strategy"], as_index=False)["gain_mean"].mean()
            best = per.sort_values("gain_mean", ascending=False).drop_duplicates(keys)
            best = best.rename(columns={"strategy": "best_strategy", "gain_mean": "gain"})
        out = gaps.merge(best, on=["source", "target"], how="left")
        return out.sort_values(["target", "mmd"]).reset_index(drop=True)

    def cka_figures(self) -> list[str]:
        """Heatmaps per CKA comparison (first seed) and one per-layer change curve."""
        figures: list[str] = []
        curves: dict[str, tuple[list[str], list[float]]] = {}
        seen: set[tuple[str, ...]] = set()
        # one heatmap per comparison: the first seed at each target's largest label budget
        size: dict[tuple[str, str], float] = {}
        if "n_train" in self.records:
            size = self.records.groupby(["target", "budget"])["n_train"].median().to_dict()
        largest: dict[str, float] = {}
        for (target, _), n in size.items():
            largest[target] = max(largest.get(target, 0.0), float(n))
        for item in sorted(self.artifacts.get("cka", []), key=lambda a: a.get("seed", 0)):
            n = size.get((item["target"], item["budget"]), 0.0)
            if n < largest.get(item["target"], 0.0):
                continue
            ident = (item["source"], item["target"], item["strategy"], item["budget"], item["kind"])
            if ident in seen:
                continue
            seen.add(ident)
            matrix = np.asarray(item["matrix"], dtype=float)
            title = f"{item['kind']}: {item['source']} / {item['strategy']} on {item['target']}"
            figures.append(plots.cka_heatmap(matrix, item["rows"], item["cols"], title))
            if item["kind"] == "pre_vs_finetuned" and matrix.shape[0] == matrix.shape[1]:
                label = f"{item['source']} {item['strategy']} {item['target']} {item['budget']}"
                curves[label] = (list(item["rows"]), list(1.0 - np.diag(matrix)))
        curve = plots.layer_change_curve(curves)
        return ([curve] if curve else []) + figures

    def cka_table(self) -> pd.DataFrame:
        """Per-layer CKA of every comparison in long form (for CSV and notebooks)."""
        rows = []
        for item in self.artifacts.get("cka", []):
            matrix = np.asarray(item["matrix"], dtype=float)
            if matrix.shape[0] != matrix.shape[1]:
                continue
            for layer, value in zip(item["rows"], np.diag(matrix), strict=True):
                rows.append(
                    {k: item[k] for k in ("source", "target", "strategy", "budget", "seed", "kind")}
                    | {"layer": layer, "cka": float(value)}
                )
        return pd.DataFrame(rows)
