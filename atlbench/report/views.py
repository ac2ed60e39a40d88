"""Every table the report and the CSVs show, computed once from the store's records.

``Views`` is the Python face of a results directory: each attribute is a pandas DataFrame with
documented columns, so a notebook gets exactly what ``leaderboard.csv`` and the HTML report show,
and :meth:`Views.figures` returns the report's figures as matplotlib ``Figure`` objects.
Properties are cached because several sections reuse the same statistics.

Two comparisons run side by side (:func:`atlbench.analysis.paired_gains`): ``same_algorithm``
(Wang et al. 2019: the same recipe without the source; the only one that may say "negative
transfer") and ``scratch`` (against the trained from-scratch baseline). Intervals cover seeds and
test examples when per-example correctness is stored (every cell since this version).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from atlbench.analysis import (
    cost_accuracy,
    estimator_agreement,
    estimator_stability,
    forgetting_table,
    gain_per_hour,
    ground_truth,
    labels_saved,
    overfitting_table,
    paired_gains,
    probability_of_improvement,
    summarize,
    with_history,
)
from atlbench.report import plots
from atlbench.report.leaderboard import leaderboard

TIMING_COLUMNS = [
    "source",
    "target",
    "strategy",
    "role",
    "budget",
    "seed",
    "device",
    "dtype",
    "n_train",
    "n_trials",
    "cost_s",
    "train_time_s",
    "data_wait_s",
    "compute_time_s",
    "selection_time_s",
    "time_to_best_s",
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
    "comparison",
    "baseline_source",
    "baseline_strategy",
    "n_pairs",
    "mean",
    "baseline_mean",
    "gain_mean",
    "gain_ci_low",
    "gain_ci_high",
    "p_value",
    "p_adj",
    "correction",
    "p_equivalence",
    "negative_transfer_gap",
    "verdict",
    "interval",
    "note",
]
ESTIMATOR_COLUMNS = [
    "target",
    "budget",
    "estimator",
    "source",
    "score",
    "time_s",
    "truth",
    "truth_strategy",
    "n_sources",
    "n_seeds",
    "weighted_tau",
    "tau_ci_low",
    "tau_ci_high",
    "p_value",
    "pearson_r",
    "rel_top1",
    "indicative",
    "set_level",
    "reason",
]
FAILURE_COLUMNS = ["source", "target", "strategy", "role", "budget", "seed", "error"]
# static baselines scored like estimators (with "baseline_history", a source's record on the
# other targets): in the agreement tables they are what every estimator must beat
BASELINES = ("baseline_params", "baseline_reported_acc", "baseline_history")
# Record columns a sweep always writes and an imported table (``atlbench import``) may lack.
# Views that only show them (the leaderboard's labels, arch, macro-F1) show blanks; a report
# section that computes with them is left out, with one line saying why (``Views.omitted``).
DISPLAY_COLUMNS = ("arch", "n_train", "test_macro_f1")
SECTION_COLUMNS: dict[str, tuple[str, ...]] = {
    "negative-transfer": ("trains_encoder", "n_train"),  # pairing by role, labels saved
    "efficiency": ("n_train", "cost_s", "device"),  # learning curves, cost, gain per hour
    "timing": ("cost_s",),
}


class Views:
    """Tables over one results directory's records, estimates and artifacts."""

    def __init__(
        self,
        records: pd.DataFrame,
        estimates: pd.DataFrame | None = None,
        artifacts: dict[str, list[dict[str, Any]]] | None = None,
        meta: dict[str, Any] | None = None,
        correct: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.records = records
        self._estimates = estimates if estimates is not None else pd.DataFrame()
        self.artifacts = artifacts or {}
        self.meta = meta or {}
        self.correct = correct or None

    @classmethod
    def from_store(cls, store: Any) -> Views:
        """Only what belongs to the store's current plan, labelled with the current ids.

        A store keeps results of earlier versions of a suite (renamed ids, changed data or
        weights); records are already filtered this way by ``Store.records``, and estimates,
        CKA comparisons and domain gaps get the same treatment here.
        """
        labels = store.meta("estimate_labels", {}) or {}
        source_ids = store.meta("source_keys", {}) or {}
        estimates = store.estimates()
        if len(estimates):
            keep = estimates["key"].isin(list(labels)) & estimates["source_key"].isin(
                list(source_ids)
            )
            estimates = estimates[keep].copy()
            estimates["source"] = [source_ids[k] for k in estimates["source_key"]]
            estimates["target"] = [labels[k]["target"] for k in estimates["key"]]
        records = store.records()
        plan = {r["key"]: r for r in records.to_dict("records")} if len(records) else {}
        cka = []
        for item in store.artifacts("cka"):
            tuned = item.get("cell_a") or item.get("cell_b")  # the fine-tuned cell's key
            if tuned in plan:
                cell = plan[tuned]
                cka.append(item | {k: cell[k] for k in ("source", "target", "strategy", "budget")})
        current = {}
        for kind in ("domain_gap", "label_mapping"):
            keys = set(store.meta(f"{kind}_keys", []) or [])
            current[kind] = [g for g in store.artifacts(kind) if g.get("key") in keys]
        meta = {"suite": store.meta("suite", {}), "skipped_pairs": store.meta("skipped_pairs", [])}
        artifacts = {"cka": cka, **current}
        return cls(records, estimates, artifacts, meta, store.correctness())

    # -- settings the suite chose ---------------------------------------------------------------
    @property
    def suite(self) -> dict[str, Any]:
        return self.meta.get("suite") or {}

    @property
    def correction(self) -> str:
        return str(self.suite.get("correction", "holm"))

    @property
    def margin(self) -> float | None:
        return self.suite.get("equivalence_margin")

    @property
    def has_results(self) -> bool:
        return not self.records.empty and bool((self.records["status"] == "done").any())

    @cached_property
    def omitted(self) -> dict[str, str]:
        """Report sections left out because the records lack columns they compute with
        (imported results carry the accuracy, not a training run's facts): section id -> why."""
        if not self.has_results:
            return {}
        done = self.records[self.records["status"] == "done"]
        out = {}
        for section, columns in SECTION_COLUMNS.items():
            absent = [c for c in columns if c not in done or done[c].isna().all()]
            if absent:
                out[section] = (
                    f"Left out: the records have no {', '.join(absent)}"
                    + (" (imported results carry only what the table gave)."
                       if self.suite.get("imported") else ".")
                )  # fmt: skip
        return out

    @cached_property
    def _shown(self) -> pd.DataFrame:
        """The records with every display-only column present (blank where not recorded)."""
        absent = [c for c in DISPLAY_COLUMNS if c not in self.records]
        return self.records.reindex(columns=[*self.records.columns, *absent])

    # -- accuracy and gains ---------------------------------------------------------------------
    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per (source, target, strategy, budget): mean, std and 95% CI of test accuracy
        (covering seeds and test examples)."""
        if not self.has_results:
            return pd.DataFrame()
        return summarize(self._shown, "test_acc", correct=self.correct)

    def _gains(self, comparison: str) -> pd.DataFrame:
        if not self.has_results or "negative-transfer" in self.omitted:
            return pd.DataFrame(columns=NEGATIVE_TRANSFER_COLUMNS)
        return paired_gains(
            self.records, self.correct, comparison, equivalence_margin=self.margin,
            correction=self.correction,
        )  # fmt: skip

    @cached_property
    def gains(self) -> pd.DataFrame:
        """Same-algorithm comparison (Wang et al. 2019): the negative-transfer verdicts."""
        return self._gains("same_algorithm")

    @cached_property
    def vs_scratch(self) -> pd.DataFrame:
        """Every transfer recipe against the trained from-scratch baseline."""
        return self._gains("scratch")

    @cached_property
    def leaderboard(self) -> pd.DataFrame:
        if not self.has_results:
            return leaderboard(
                pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
            )
        f1 = summarize(self._shown, "test_macro_f1")
        return leaderboard(self._shown, self.summary, f1, self.vs_scratch, self.gains)

    @cached_property
    def negative_transfer(self) -> pd.DataFrame:
        """``negative_transfer.csv``: both comparisons, one row each per transfer recipe."""
        tables = [t for t in (self.gains, self.vs_scratch) if not t.empty]
        if not tables:
            return pd.DataFrame(columns=NEGATIVE_TRANSFER_COLUMNS)
        both = pd.concat(tables, ignore_index=True)
        return both.reindex(columns=NEGATIVE_TRANSFER_COLUMNS)

    @cached_property
    def p_improvement(self) -> pd.DataFrame | None:
        if not self.has_results or "negative-transfer" in self.omitted:
            return None
        table = probability_of_improvement(self.records)
        return table if len(table) else None

    @cached_property
    def labels_saved(self) -> pd.DataFrame | None:
        if not self.has_results or "negative-transfer" in self.omitted:
            return None
        return labels_saved(self.records, self.correct, correction=self.correction)

    @cached_property
    def gain_per_hour(self) -> pd.DataFrame | None:
        if not self.has_results or "efficiency" in self.omitted:
            return None
        return gain_per_hour(self.records)

    @cached_property
    def cost_accuracy(self) -> pd.DataFrame:
        if not self.has_results or "efficiency" in self.omitted:
            return pd.DataFrame()
        return cost_accuracy(self.records)

    @cached_property
    def failures(self) -> pd.DataFrame:
        if self.records.empty:
            return pd.DataFrame(columns=FAILURE_COLUMNS)
        failed = self.records[self.records["status"] != "done"]
        return failed.reindex(columns=FAILURE_COLUMNS).reset_index(drop=True)

    # -- cost -------------------------------------------------------------------------------------
    @cached_property
    def timing(self) -> pd.DataFrame:
        """One row per finished cell: every clock, throughput and memory figure it recorded."""
        if not self.has_results or "timing" in self.omitted:
            return pd.DataFrame(columns=TIMING_COLUMNS)
        done = self.records[self.records["status"] == "done"]
        return done.reindex(columns=TIMING_COLUMNS).reset_index(drop=True)

    @cached_property
    def timing_summary(self) -> pd.DataFrame:
        """Per strategy and role: median cell cost, training throughput, how the training time
        splits into waiting for data and computing, time to the best validation score and peak
        memory, over its finished cells."""
        cols = ["strategy", "role", "cells", "median_cost_s", "total_cost_s", "train_samples_per_s",
                "data_wait_s", "compute_time_s", "time_to_best_s", "peak_mem_mb"]  # fmt: skip
        t = self.timing
        if t.empty:
            return pd.DataFrame(columns=cols)
        numeric = t.assign(**{c: pd.to_numeric(t[c], errors="coerce") for c in TIMING_COLUMNS[9:]})
        out = numeric.groupby(["strategy", "role"], sort=False).agg(
            cells=("cost_s", "size"),
            median_cost_s=("cost_s", "median"),
            total_cost_s=("cost_s", "sum"),
            train_samples_per_s=("train_samples_per_s", "median"),
            data_wait_s=("data_wait_s", "median"),
            compute_time_s=("compute_time_s", "median"),
            time_to_best_s=("time_to_best_s", "median"),
            peak_mem_mb=("peak_mem_mb", "median"),
        )
        return out.reset_index()[cols]

    # -- estimators -------------------------------------------------------------------------------
    @cached_property
    def estimates(self) -> pd.DataFrame:
        """Finished estimator scores: source, target, budget, seed, estimator, score, time_s,
        set_level (the score is normalised over the candidate set)."""
        cols = ["source", "target", "budget", "seed", "estimator", "score", "time_s", "set_level"]
        est = self._estimates
        if est.empty:
            return pd.DataFrame(columns=cols)
        est = est[est["status"] == "done"].copy()
        extra = est["extra"] if "extra" in est else pd.Series([{}] * len(est), index=est.index)
        est["set_level"] = [bool((e or {}).get("set_level", False)) for e in extra]
        return est.reindex(columns=cols).reset_index(drop=True)

    @cached_property
    def truth(self) -> pd.DataFrame:
        """Per (source, target, budget, seed): the accuracy estimators are judged against (the
        suite's ``truth``: the tuned fine-tuning recipe, never a maximum that includes kNN)."""
        if not self.has_results:
            return pd.DataFrame(columns=["source", "target", "budget", "seed", "strategy", "truth"])
        return ground_truth(self.records, str(self.suite.get("truth", "finetune")))

    @cached_property
    def selection_scores(self) -> pd.DataFrame:
        """Estimator scores plus the history baseline (a source's mean tuned accuracy on the
        other targets of this study, leave-one-target-out): what every estimator is set beside."""
        if self.estimates.empty or self.truth.empty:
            return self.estimates
        return with_history(self.estimates, self.truth)

    @cached_property
    def agreement(self) -> pd.DataFrame | None:
        """Per (target, budget, estimator or baseline): agreement with the truth."""
        scores = self.selection_scores
        if scores.empty or self.truth.empty:
            return None
        return estimator_agreement(scores, None, truth=self.truth)

    @cached_property
    def baseline_comparison(self) -> list[str]:
        """Plain words: which estimators do not beat the best static baseline, per budget."""
        agreement = self.agreement
        if agreement is None or agreement.empty:
            return []
        lines = []
        for (target, budget), grp in agreement.groupby(["target", "budget"], sort=False):
            is_base = grp["estimator"].str.startswith("baseline_")
            base = grp[is_base].dropna(subset=["weighted_tau"])
            est = grp[~is_base].dropna(subset=["weighted_tau"])
            if base.empty or est.empty:
                continue
            best = base.loc[base["weighted_tau"].idxmax()]
            losers = est[est["weighted_tau"] <= best["weighted_tau"]]["estimator"].tolist()
            note = " (indicative: fewer than 5 sources)" if bool(grp["indicative"].any()) else ""
            if losers:
                lines.append(
                    f"On {target} ({budget}), {len(losers)} of {len(est)} estimators do not beat "
                    f"the {best['estimator'].removeprefix('baseline_')} baseline "
                    f"(weighted τ {best['weighted_tau']:.2f}): {', '.join(losers)}{note}."
                )
            else:
                name = best["estimator"].removeprefix("baseline_")
                lines.append(
                    f"On {target} ({budget}), every estimator beats the best baseline "
                    f"({name}, τ {best['weighted_tau']:.2f}){note}."
                )
        return lines

    @cached_property
    def stability(self) -> pd.DataFrame:
        """How much each estimator's ranking agrees with itself across seeds and budgets
        (Kendall tau between its rankings; Agostinelli et al. 2022)."""
        scores = self.estimates[~self.estimates["estimator"].isin(BASELINES)]
        return estimator_stability(scores) if len(scores) else pd.DataFrame()

    @cached_property
    def estimators_csv(self) -> pd.DataFrame:
        """``estimators.csv``: seed-mean scores per (target, budget, estimator, source), the
        seed-mean truth beside them, and each estimator's agreement with the truth."""
        est = self.selection_scores
        if est.empty:
            return pd.DataFrame(columns=ESTIMATOR_COLUMNS)
        keys = ["target", "budget", "estimator", "source"]
        scores = est.groupby(keys, as_index=False).agg(
            score=("score", "mean"), time_s=("time_s", "mean"), set_level=("set_level", "max")
        )
        if not self.truth.empty:
            truth = self.truth.groupby(["source", "target", "budget"], as_index=False).agg(
                truth=("truth", "mean"), truth_strategy=("strategy", "first")
            )
            scores = scores.merge(truth, on=["source", "target", "budget"], how="left")
        if self.agreement is not None:
            scores = scores.merge(self.agreement, on=["target", "budget", "estimator"], how="left")
        return scores.reindex(columns=ESTIMATOR_COLUMNS).sort_values(keys, ignore_index=True)

    # -- domain gap -------------------------------------------------------------------------------
    @cached_property
    def domain_gap(self) -> pd.DataFrame:
        """Source pre-training data (its held-out test split) vs target, on two rulers, beside
        the gain of the suite's ``truth`` strategy (chosen before looking at test accuracy).

        Columns: source, target, ruler ("reference": one embedding for every source, comparable
        across sources; "source": each source's own features), embedding, mmd (unbiased MMD^2,
        RBF), mmd_p (permutation p-value), frechet, n_source, n_target, gain_strategy, gain
        (its mean paired gain over the same-algorithm baseline, averaged over budgets).
        """
        cols = ["source", "target", "ruler", "embedding", "mmd", "mmd_p", "frechet", "n_source",
                "n_target", "gain_strategy", "gain"]  # fmt: skip
        items = self.artifacts.get("domain_gap", [])
        if not items or self.records.empty:
            return pd.DataFrame(columns=cols)
        rows = []
        for item in items:
            for ruler, key in (("reference", "reference"), ("source", "source_space")):
                part = item.get(key)
                if isinstance(part, dict):
                    embedding = part.get("embedding", "the source's own features")
                    rows.append({"source": item["source"], "target": item["target"], "ruler": ruler,
                                 "embedding": embedding} | part)  # fmt: skip
        gaps = pd.DataFrame(rows).reindex(columns=cols[:-2])
        current = self.records[["source", "target"]].drop_duplicates()
        gaps = gaps.merge(current, on=["source", "target"])
        truth = str(self.suite.get("truth", "finetune"))
        g = self.gains
        if not g.empty:
            names = self.records.drop_duplicates("strategy").set_index("strategy")["strategy_name"]
            pick = g[(g["strategy"] == truth) | (g["strategy"].map(names) == truth)]
            gain = pick.groupby(["source", "target"], as_index=False).agg(
                gain_strategy=("strategy", "first"), gain=("gain_mean", "mean")
            )
            gaps = gaps.merge(gain, on=["source", "target"], how="left")
        return gaps.reindex(columns=cols).sort_values(["target", "ruler", "mmd"], ignore_index=True)

    # -- failure modes ---------------------------------------------------------------------------
    @cached_property
    def forgetting(self) -> pd.DataFrame:
        """``forgetting.csv``: the source head's accuracy on its own task before and after each
        transfer recipe, and the drop with a 95% interval over seeds."""
        return (
            forgetting_table(self.records) if self.has_results else forgetting_table(pd.DataFrame())
        )

    @cached_property
    def overfitting(self) -> pd.DataFrame:
        """Per recipe: the selected run's train/validation gap and how many cells overfit."""
        return (
            overfitting_table(self.records)
            if self.has_results
            else overfitting_table(pd.DataFrame())
        )

    @cached_property
    def label_mapping(self) -> pd.DataFrame:
        """Per (source with a head, target): how target classes land on source classes."""
        cols = ["source", "target", "n_target_classes", "n_confident", "n_shared", "mapping"]
        rows = []
        for item in self.artifacts.get("label_mapping", []):
            pairs = [
                f"{name} → {z} ({p:.2f})"
                for name, z, p in zip(item["class_names"], item["top"], item["top_p"], strict=True)
            ]
            rows.append({k: item[k] for k in cols[:5]} | {"mapping": "; ".join(pairs)})
        return pd.DataFrame(rows, columns=cols)

    @cached_property
    def failure_modes(self) -> pd.DataFrame:
        """Per (source, target): each failure mode stated in plain words, only where the data
        supports it, with its number and interval. Columns: source, target, mode, statement."""
        rows = [
            *_negative_transfer_lines(self.gains),
            *_domain_gap_lines(self.domain_gap),
            *_forgetting_lines(self.forgetting),
            *_overfitting_lines(self.overfitting),
            *_label_mapping_lines(self.label_mapping),
        ]
        return pd.DataFrame(rows, columns=["source", "target", "mode", "statement"])

    # -- the protocol box -------------------------------------------------------------------------
    @cached_property
    def protocol(self) -> dict[str, Any]:
        """What the verdicts rest on: budgets, validation, seeds, trials, what intervals cover."""
        suite, rec = self.suite, self.records
        done = rec[rec["status"] == "done"] if not rec.empty else rec
        trials: dict[str, int] = {}
        if len(done) and "n_trials" in done:
            for strategy, n in done.groupby("strategy")["n_trials"].max().items():
                if n and n == n:
                    trials[str(strategy)] = int(n)
        interval = ""
        if not self.vs_scratch.empty:
            interval = (
                str(self.vs_scratch["interval"].dropna().iloc[0])
                if self.vs_scratch["interval"].notna().any()
                else ""
            )
        training = suite.get("training") or {}
        return {
            "budgets": sorted(set(done["budget"])) if len(done) else [],
            "validation": suite.get("validation", "budgeted"),
            "seeds": list(suite.get("seeds", [])),
            "trials": trials,
            "schedule": training.get("schedule", "successive_halving"),
            "interval": interval,
            "correction": "Benjamini-Hochberg" if self.correction == "bh" else "Holm",
            "margin": self.margin,
            "truth": suite.get("truth", "finetune"),
        }

    @cached_property
    def next_steps(self) -> list[str]:
        """What to do about an inconclusive study, in the suite's own terms."""
        steps = []
        seeds = len(self.protocol["seeds"])
        for table, words in ((self.gains, "against the same algorithm without the source"),
                             (self.vs_scratch, "against scratch training")):  # fmt: skip
            if table.empty:
                continue
            unsure = int(table["verdict"].isin(["not significant", "undetermined"]).sum())
            if unsure:
                more = max(10, 2 * seeds)
                steps.append(
                    f"{unsure} of {len(table)} comparisons {words} are not significant with "
                    f"{seeds} seed(s): rerun with `seeds: [0..{more - 1}]` (finished cells are "
                    "kept), or set `equivalence_margin` to test for equivalence."
                )
        flags = self._edge_flags()
        edge = {k: v for k, v in flags.items() if "edge" in k}
        if edge:
            n = sum(edge.values())
            common = max(edge, key=edge.get)  # type: ignore[arg-type]
            steps.append(
                f"{n} cells chose a value at the edge of the search space (most often: {common}): "
                "widen that range in `search:`, or give more `trials`."
            )
        longer = sum(v for k, v in flags.items() if "max_epochs" in k)
        if longer:
            steps.append(f"{longer} cells were still improving at max_epochs: raise `max_epochs`.")
        if self.protocol["validation"] == "full":
            steps.append(
                "Validation is `full`: hyperparameters were chosen on the whole validation split, "
                "more labels than the budget. Few-shot results are optimistic; use "
                "`validation: budgeted` for a realistic protocol."
            )
        return steps

    def _edge_flags(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self.records.empty or "edge_flags" not in self.records:
            return counts
        for flags in self.records["edge_flags"].dropna():
            for flag in flags if isinstance(flags, list) else []:
                counts[str(flag)] = counts.get(str(flag), 0) + 1
        return counts

    # -- environment and CKA ----------------------------------------------------------------------
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

    def cka_items(self) -> list[dict[str, Any]]:
        """One CKA comparison per (source, target, strategy, budget, kind): the first seed at
        each target's largest label budget."""
        size: dict[tuple[str, str], float] = {}
        if "n_train" in self.records:
            size = self.records.groupby(["target", "budget"])["n_train"].median().to_dict()
        largest: dict[str, float] = {}
        for (target, _), n in size.items():
            largest[target] = max(largest.get(target, 0.0), float(n))
        seen: set[tuple[str, ...]] = set()
        out = []
        for item in sorted(self.artifacts.get("cka", []), key=lambda a: a.get("seed", 0)):
            if size.get((item["target"], item["budget"]), 0.0) < largest.get(item["target"], 0.0):
                continue
            ident = (item["source"], item["target"], item["strategy"], item["budget"], item["kind"])
            if ident not in seen:
                seen.add(ident)
                out.append(item)
        return out

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

    # -- figures ----------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The report's figures as matplotlib ``Figure`` objects, by name (they display inline
        in a notebook)."""
        out: dict[str, Any] = {}
        if not self.summary.empty:
            for target in self.summary["target"].unique():
                fig = plots.learning_curves(self.summary, self.records, str(target))
                if fig is not None:
                    out[f"learning curve: {target}"] = fig
        for budget, fig in plots.gain_heatmaps(self.gains).items():
            out[f"gain heatmap: {budget}"] = fig
        fig = plots.cost_plot(self.cost_accuracy)
        if fig is not None:
            out["accuracy vs cost"] = fig
        truth = self.truth
        if not truth.empty and not self.estimates.empty:
            for name in sorted(set(self.estimates["estimator"])):
                fig = plots.estimator_scatter(self.estimates, truth, name)
                if fig is not None:
                    out[f"estimator: {name}"] = fig
        gap = self.domain_gap
        if len(gap):
            fig = plots.domain_gap_plot(gap[gap["ruler"] == "reference"])
            if fig is not None:
                out["domain gap"] = fig
        out |= self.cka_figures()
        return out

    def cka_figures(self) -> dict[str, Any]:
        """The per-layer change curve, then one heatmap per comparison."""
        out: dict[str, Any] = {}
        curves: dict[str, tuple[list[str], list[float]]] = {}
        heatmaps = {}
        for item in self.cka_items():
            matrix = np.asarray(item["matrix"], dtype=float)
            title = f"{item['kind']}: {item['source']} / {item['strategy']} on {item['target']}"
            heatmaps[f"cka: {title}"] = plots.cka_heatmap(matrix, item["rows"], item["cols"], title)
            if item["kind"] == "pre_vs_finetuned" and matrix.shape[0] == matrix.shape[1]:
                label = f"{item['source']} {item['strategy']} {item['target']} {item['budget']}"
                curves[label] = (list(item["rows"]), list(1.0 - np.diag(matrix)))
        curve = plots.layer_change_curve(curves)
        if curve is not None:
            out["cka: what fine-tuning changed"] = curve
        return out | heatmaps


# -- the failure-mode panel's sentences ------------------------------------------------------------

Line = tuple[str, str, str, str]


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}"


def _negative_transfer_lines(gains: pd.DataFrame) -> list[Line]:
    if gains.empty:
        return []
    hurt = gains[gains["verdict"].isin(["negative (significant)", "negative (nominal)"])]
    return [
        (r.source, r.target, "negative transfer",
         f"{r.strategy} at {r.budget}: {_pts(r.gain_mean)} points [{_pts(r.gain_ci_low)}, "
         f"{_pts(r.gain_ci_high)}] against the same algorithm without the source ({r.verdict})")
        for r in hurt.itertuples()
    ]  # fmt: skip


def _domain_gap_lines(gap: pd.DataFrame) -> list[Line]:
    if gap.empty:
        return []
    far = gap[(gap["ruler"] == "reference") & (gap["mmd_p"] < 0.05)]
    return [
        (r.source, r.target, "domain gap",
         f"the target differs from the source's held-out data: MMD² {r.mmd:.3g} on the "
         f"reference ruler (permutation p {r.mmd_p:.3g})")
        for r in far.itertuples()
    ]  # fmt: skip


def _forgetting_lines(table: pd.DataFrame) -> list[Line]:
    if table.empty:
        return []
    return [
        (r.source, r.target, "forgetting",
         f"{r.strategy} at {r.budget} forgets {r.forgetting * 100:.1f} points "
         f"[{r.forgetting_ci_low * 100:.1f}, {r.forgetting_ci_high * 100:.1f}] of the source "
         f"task ({r.source_acc_before:.3f} -> {r.source_acc_after:.3f})")
        for r in table[table["forgetting_ci_low"] > 0].itertuples()
    ]  # fmt: skip


def _overfitting_lines(table: pd.DataFrame) -> list[Line]:
    if table.empty:
        return []
    return [
        (r.source, r.target, "overfitting",
         f"{r.strategy} at {r.budget}: {int(r.overfit_cells)} of {int(r.n_cells)} cells overfit "
         f"the budget (train-validation gap {r.train_val_gap * 100:.0f} points, validation "
         "peaked early)")
        for r in table[table["overfit_cells"] > 0].itertuples()
    ]  # fmt: skip


def _label_mapping_lines(table: pd.DataFrame) -> list[Line]:
    out: list[Line] = []
    for r in table.itertuples():
        if r.n_shared:
            text = (f"{r.n_shared} of {r.n_target_classes} target classes share their top source "
                    "class with another: the source head cannot tell them apart")  # fmt: skip
        elif r.n_confident == r.n_target_classes:
            text = (f"all {r.n_target_classes} target classes map confidently onto distinct source "
                    "classes: the label spaces line up (possibly permuted)")  # fmt: skip
        else:
            continue
        out.append((r.source, r.target, "label mapping", text))
    return out
