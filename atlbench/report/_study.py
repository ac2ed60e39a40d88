"""What a results directory holds, and the statistics several report sections share.

:class:`StudyData` is the layer under the report sections: the store's records, estimates and
artifacts (only those of the current plan), the suite's settings, and the few computations that
more than one section reads (accuracy summaries, the two paired comparisons, the estimators'
ground truth). Everything a single section shows is that section's own code
(:mod:`atlbench.report.sections`); :meth:`StudyData.frame` computes it once per results directory.
:class:`atlbench.report._views.Views` adds the public names on top.

Two comparisons run side by side (:func:`atlbench.analysis.paired_gains`): ``same_algorithm``
(Wang et al. 2019: the same recipe without the source; the only one that may say "negative
transfer") and ``scratch`` (against the trained from-scratch baseline). Intervals cover seeds and
test examples when per-example correctness is stored (every cell since this version).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from atlbench.analysis import (
    estimator_agreement,
    ground_truth,
    paired_gains,
    summarize,
    with_history,
)
from atlbench.registry import REPORT_SECTIONS
from atlbench.seeds import SeedSchedule

S = TypeVar("S", bound="StudyData")

# Record columns a sweep always writes and an imported table (``atlbench import``) may lack.
# Tables that only show them (the leaderboard's labels, arch, macro-F1) show blanks; a report
# section that computes with them is left out, with one line saying why (``omitted``).
DISPLAY_COLUMNS = ("arch", "n_train", "test_macro_f1")
# the columns of the two comparisons (one row per transfer recipe and comparison)
COMPARISON_COLUMNS = [
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
    "p_equivalence_adj",
    "p_last_look",
    "negative_transfer_gap",
    "verdict",
    "stop",
    "near_threshold",
    "threshold_distance",
    "interval",
    "note",
]


class StudyData:
    """Records, estimates and artifacts of one results directory, and their shared statistics."""

    def __init__(
        self,
        records: pd.DataFrame,
        estimates: pd.DataFrame | None = None,
        artifacts: dict[str, list[dict[str, Any]]] | None = None,
        meta: dict[str, Any] | None = None,
        correct: Mapping[Any, np.ndarray] | None = None,
    ) -> None:
        self.records = records
        self._estimates = estimates if estimates is not None else pd.DataFrame()
        self.artifacts = artifacts or {}
        self.meta = meta or {}
        self.correct: Mapping[Any, np.ndarray] | None = correct or None
        self._frames: dict[str, pd.DataFrame | None] = {}
        self._figures: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_store(cls: type[S], store: Any) -> S:
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
        meta["seed_rounds"] = store.meta("seed_rounds", {})
        artifacts = {"cka": cka, **current}
        return cls(records, estimates, artifacts, meta, store.correctness())

    # -- what each section computes, once ---------------------------------------------------------
    def frame(self, section: str) -> pd.DataFrame | None:
        """The frame of report section ``section`` (its ``data``), computed once."""
        if section not in self._frames:
            self._frames[section] = REPORT_SECTIONS[section]().data(self)
        return self._frames[section]

    def table(self, section: str) -> pd.DataFrame:
        """:meth:`frame`, with an empty frame for a section that has nothing."""
        frame = self.frame(section)
        return frame if frame is not None else pd.DataFrame()

    def figures_of(self, section: str) -> dict[str, Any]:
        """The matplotlib figures of report section ``section``, by name, built once."""
        if section not in self._figures:
            self._figures[section] = REPORT_SECTIONS[section]().figures(self)
        return self._figures[section]

    # -- settings the suite chose ---------------------------------------------------------------
    @property
    def suite(self) -> dict[str, Any]:
        return self.meta.get("suite") or {}

    @property
    def correction(self) -> str:
        return str(self.suite.get("correction", "holm"))

    @property
    def correction_name(self) -> str:
        """The multiple-testing correction in words."""
        return "Benjamini-Hochberg" if self.correction == "bh" else "Holm"

    @property
    def margin(self) -> float | None:
        return self.suite.get("equivalence_margin")

    @property
    def truth_strategy(self) -> str:
        """The recipe estimators are judged against and domain gaps are set beside."""
        return str(self.suite.get("truth", "finetune"))

    @property
    def has_results(self) -> bool:
        return not self.records.empty and bool((self.records["status"] == "done").any())

    @cached_property
    def omitted(self) -> dict[str, str]:
        """Report sections left out because the records lack columns they compute with
        (imported results carry the accuracy, not a training run's facts): section id -> why.
        Each section names those columns in its ``requires``."""
        if not self.has_results:
            return {}
        done = self.records[self.records["status"] == "done"]
        out = {}
        for section in sorted(REPORT_SECTIONS.values(), key=lambda s: s.order):
            absent = [c for c in section.requires if c not in done or done[c].isna().all()]
            if absent:
                out[section.name] = (
                    f"Left out: the records have no {', '.join(absent)}"
                    + (" (imported results carry only what the table gave)."
                       if self.suite.get("imported") else ".")
                )  # fmt: skip
        return out

    @cached_property
    def shown_records(self) -> pd.DataFrame:
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
        return summarize(self.shown_records, "test_acc", correct=self.correct)

    def _gains(self, comparison: str) -> pd.DataFrame:
        if not self.has_results or "negative-transfer" in self.omitted:
            return pd.DataFrame(columns=COMPARISON_COLUMNS)
        return paired_gains(
            self.records, self.correct, comparison, equivalence_margin=self.margin,
            correction=self.correction, schedule=self.schedule, held=self.held,
        )  # fmt: skip

    @property
    def schedule(self) -> SeedSchedule | None:
        """The suite's seed schedule (None: a fixed list of seeds, one look)."""
        spec = self.suite.get("seed_schedule")
        if not spec:
            return None
        return SeedSchedule(int(spec["start"]), int(spec["step"]), int(spec["max"]),
                            int(spec.get("first", 0)))  # fmt: skip

    @property
    def seed_rounds(self) -> dict[str, Any]:
        """What the adaptive sweep did (:mod:`atlbench._adaptive`); empty without a schedule."""
        return dict(self.meta.get("seed_rounds") or {})

    @property
    def held(self) -> dict[tuple[Any, ...], str]:
        """Why an open comparison got no more seeds (racing, the compute cap), by recipe."""
        return {tuple(h[:4]): str(h[4]) for h in self.seed_rounds.get("held", [])}

    @cached_property
    def gains(self) -> pd.DataFrame:
        """Same-algorithm comparison (Wang et al. 2019): the negative-transfer verdicts."""
        return self._gains("same_algorithm")

    @cached_property
    def vs_scratch(self) -> pd.DataFrame:
        """Every transfer recipe against the trained from-scratch baseline."""
        return self._gains("scratch")

    # -- what estimators are judged against -------------------------------------------------------
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
        return ground_truth(self.records, self.truth_strategy)

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
