"""Domain gap: each source's held-out pre-training data against the target, on two rulers,
beside the gain of the suite's truth strategy (chosen before looking at test accuracy)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report import _plots as plots
from atlbench.report._study import StudyData
from atlbench.report._tables import pts
from atlbench.report.sections._base import Section, Table

COLUMNS = ["source", "target", "ruler", "embedding", "mmd", "mmd_p", "frechet", "n_source",
           "n_target", "gain_strategy", "gain"]  # fmt: skip


@register_report_section("domain-gap", order=40)
class DomainGap(Section):
    parent = "efficiency"
    title = "Domain gap"
    intro = (
        "<p>Distance between each source's held-out pre-training data (its test split) and the "
        "target's training split: unbiased MMD² with an RBF kernel (up to 500 examples per "
        "side; permutation p-value) and the Fréchet distance. The <b>reference</b> ruler "
        "measures every source in one fixed embedding with one bandwidth per target, so sources "
        "compare; the <b>source</b> ruler uses each source's own features, a different metric "
        "per source. The gain is the suite's truth strategy's same-algorithm gain, averaged "
        "over budgets.</p>"
    )
    csv = "domain_gap"
    table = Table(
        {
            "target": "Target",
            "source": "Source",
            "ruler": "Ruler",
            "mmd": "MMD²",
            "mmd_p": "p (MMD)",
            "frechet": "Fréchet",
            "gain_strategy": "Gain of",
            "gain": "Gain",
        }
    )
    figures_at = "above"

    def data(self, views: StudyData) -> pd.DataFrame:
        """Columns: source, target, ruler ("reference": one embedding for every source,
        comparable across sources; "source": each source's own features), embedding, mmd
        (unbiased MMD^2, RBF), mmd_p (permutation p-value), frechet, n_source, n_target,
        gain_strategy, gain (its mean paired gain over the same-algorithm baseline, averaged
        over budgets)."""
        items = views.artifacts.get("domain_gap", [])
        if not items or views.records.empty:
            return pd.DataFrame(columns=COLUMNS)
        rows = []
        for item in items:
            for ruler, key in (("reference", "reference"), ("source", "source_space")):
                part = item.get(key)
                if isinstance(part, dict):
                    embedding = part.get("embedding", "the source's own features")
                    rows.append({"source": item["source"], "target": item["target"],
                                 "ruler": ruler, "embedding": embedding} | part)  # fmt: skip
        gaps = pd.DataFrame(rows).reindex(columns=COLUMNS[:-2])
        current = views.records[["source", "target"]].drop_duplicates()
        gaps = gaps.merge(current, on=["source", "target"])
        truth = views.truth_strategy
        g = views.gains
        if not g.empty:
            names = views.records.drop_duplicates("strategy").set_index("strategy")["strategy_name"]
            pick = g[(g["strategy"] == truth) | (g["strategy"].map(names) == truth)]
            gain = pick.groupby(["source", "target"], as_index=False).agg(
                gain_strategy=("strategy", "first"), gain=("gain_mean", "mean")
            )
            gaps = gaps.merge(gain, on=["source", "target"], how="left")
        return gaps.reindex(columns=COLUMNS).sort_values(
            ["target", "ruler", "mmd"], ignore_index=True
        )

    def available(self, views: StudyData) -> bool:
        return len(views.table(self.name)) > 0

    def figures(self, views: StudyData) -> dict[str, Any]:
        gap = views.table(self.name)
        if gap.empty:
            return {}
        fig = plots.domain_gap_plot(gap[gap["ruler"] == "reference"])
        return {"domain gap": fig} if fig is not None else {}

    def words(self, views: StudyData) -> list[str]:
        gap = views.table(self.name)
        gap = gap[(gap["ruler"] == "reference")].dropna(subset=["gain"]) if len(gap) else gap
        lines = []
        for target, grp in gap.groupby("target", sort=False) if len(gap) else []:
            if len(grp) < 2:
                continue
            mmd = grp["mmd"].to_numpy(dtype=float)
            near, far = grp.iloc[mmd.argmin()], grp.iloc[mmd.argmax()]
            lines.append(
                f"On {target}, on the reference ruler, the closest source ({near['source']}, "
                f"MMD² {near['mmd']:.3g}) gains {pts(near['gain'])} points with "
                f"{near['gain_strategy']}, the most distant ({far['source']}, MMD² "
                f"{far['mmd']:.3g}) {pts(far['gain'])}."
            )
        return lines
