"""Failure modes: each known way transfer fails, stated in plain words only where the data
supports it, with its number and interval (the tables under it give the detail)."""

from __future__ import annotations

import pandas as pd

from atlbench.record import Verdict
from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table, rows_of

Line = tuple[str, str, str, str]


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}"


def _negative_transfer_lines(gains: pd.DataFrame) -> list[Line]:
    if gains.empty:
        return []
    hurt = gains[gains["verdict"].isin([Verdict.NEGATIVE_SIGNIFICANT, Verdict.NEGATIVE_NOMINAL])]
    return [
        (r.source, r.target, "negative transfer",
         f"{r.strategy} at {r.budget}: {_pts(r.gain_mean)} points [{_pts(r.gain_ci_low)}, "
         f"{_pts(r.gain_ci_high)}] against the same algorithm without the source ({r.verdict})")
        for r in rows_of(hurt)
    ]  # fmt: skip


def _domain_gap_lines(gap: pd.DataFrame) -> list[Line]:
    if gap.empty:
        return []
    far = gap[(gap["ruler"] == "reference") & (gap["mmd_p"] < 0.05)]
    return [
        (r.source, r.target, "domain gap",
         f"the target differs from the source's held-out data: MMD² {r.mmd:.3g} on the "
         f"reference ruler (permutation p {r.mmd_p:.3g})")
        for r in rows_of(far)
    ]  # fmt: skip


def _forgetting_lines(table: pd.DataFrame) -> list[Line]:
    if table.empty:
        return []
    return [
        (r.source, r.target, "forgetting",
         f"{r.strategy} at {r.budget} forgets {r.forgetting * 100:.1f} points "
         f"[{r.forgetting_ci_low * 100:.1f}, {r.forgetting_ci_high * 100:.1f}] of the source "
         f"task ({r.source_acc_before:.3f} -> {r.source_acc_after:.3f})")
        for r in rows_of(table[table["forgetting_ci_low"] > 0])
    ]  # fmt: skip


def _overfitting_lines(table: pd.DataFrame) -> list[Line]:
    if table.empty:
        return []
    return [
        (r.source, r.target, "overfitting",
         f"{r.strategy} at {r.budget}: {int(r.overfit_cells)} of {int(r.n_cells)} cells overfit "
         f"the budget (train-validation gap {r.train_val_gap * 100:.0f} points, validation "
         "peaked early)")
        for r in rows_of(table[table["overfit_cells"] > 0])
    ]  # fmt: skip


def _label_mapping_lines(table: pd.DataFrame) -> list[Line]:
    out: list[Line] = []
    for r in rows_of(table):
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


@register_report_section("failure-modes", order=40)
class FailureModes(Section):
    title = "Failure modes"
    intro = (
        "<p>The four ways transfer is known to fail, each stated only where the data supports "
        "it: negative transfer (the same algorithm does better without the source), domain gap "
        "(the target is measurably far from the source's held-out data), catastrophic "
        "forgetting (fine-tuning costs the source head accuracy on its own task), overfitting "
        "the budget (train accuracy far above validation, validation peaking early) and label "
        "mismatch (target classes landing on shared source classes).</p>"
    )
    table = Table(
        {
            "source": "Source",
            "target": "Target",
            "mode": "Failure mode",
            "statement": "What the data shows",
        }
    )
    empty = '<p class="muted">None of the failure modes is supported by the data of this study.</p>'

    def data(self, views: StudyData) -> pd.DataFrame:
        """Per (source, target): each failure mode stated in plain words. Columns: source,
        target, mode, statement."""
        rows = [
            *_negative_transfer_lines(views.gains),
            *_domain_gap_lines(views.table("domain-gap")),
            *_forgetting_lines(views.table("forgetting")),
            *_overfitting_lines(views.table("overfitting")),
            *_label_mapping_lines(views.table("label-mapping")),
        ]
        return pd.DataFrame(rows, columns=["source", "target", "mode", "statement"])
