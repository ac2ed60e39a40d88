"""The summary: what the verdicts rest on, the findings in plain words, what to do next.

The findings are the ``words`` of every other registered section, in page order, so a section
that adds a table can add its one-line finding here too.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from markupsafe import Markup

from atlbench.record import Verdict
from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, ordered


def protocol(views: StudyData) -> dict[str, Any]:
    """What the verdicts rest on: budgets, validation, seeds, trials, what intervals cover."""
    suite, rec = views.suite, views.records
    done = rec[rec["status"] == "done"] if not rec.empty else rec
    trials: dict[str, int] = {}
    if len(done) and "n_trials" in done:
        for strategy, n in done.groupby("strategy")["n_trials"].max().items():
            if pd.notna(n) and n:
                trials[str(strategy)] = int(n)
    interval = ""
    scratch = views.vs_scratch
    if not scratch.empty and scratch["interval"].notna().any():
        interval = str(scratch["interval"].dropna().iloc[0])
    training = suite.get("training") or {}
    return {
        "budgets": sorted(set(done["budget"])) if len(done) else [],
        "validation": suite.get("validation", "budgeted"),
        "seeds": list(suite.get("seeds", [])),
        "trials": trials,
        "schedule": training.get("schedule", "successive_halving"),
        "interval": interval,
        "correction": views.correction_name,
        "margin": views.margin,
        "truth": suite.get("truth", "finetune"),
    }


def protocol_lines(views: StudyData) -> list[str]:
    p = protocol(views)
    imported = views.suite.get("imported")
    if imported:  # the measurements are the source's; atlbench ran no protocol of its own
        citation = " ".join(imported.get("citation") or [])
        return [
            f"Imported with atlbench import from {imported.get('origin', 'a table')}: how each "
            "accuracy was measured is the source's protocol, not atlbench's."
            + (f" {citation}" if citation else ""),
            f"Label budgets: {', '.join(p['budgets']) or 'none'}; seeds: {len(p['seeds'])}.",
            f"Estimators are judged against {p['truth']}, at each budget.",
        ]
    trials = ", ".join(f"{k} {v}" for k, v in sorted(p["trials"].items())) or "none"
    validation = (
        "budgeted: selection inside the label budget (hold-out for trained recipes, k-fold CV "
        "for frozen ones), then a retrain on all of it"
        if p["validation"] == "budgeted"
        else "full: selection on the target's whole validation split (optimistic)"
    )
    return [
        f"Label budgets: {', '.join(p['budgets']) or 'none'}; seeds: {len(p['seeds'])}.",
        f"Validation: {validation}.",
        f"Tuning trials per cell: {trials} ({p['schedule'].replace('_', ' ')}).",
        f"Intervals cover {p['interval'] or 'seeds'}; p-values are {p['correction']}-corrected "
        "per table"
        + (f"; equivalence margin ±{p['margin'] * 100:g} points." if p["margin"] else "."),
        f"Estimators are judged against {p['truth']}, at each budget, on the labels of that "
        "budget.",
    ]


def _edge_flags(views: StudyData) -> dict[str, int]:
    counts: dict[str, int] = {}
    if views.records.empty or "edge_flags" not in views.records:
        return counts
    for flags in views.records["edge_flags"].dropna():
        for flag in flags if isinstance(flags, list) else []:
            counts[str(flag)] = counts.get(str(flag), 0) + 1
    return counts


def next_steps(views: StudyData) -> list[str]:
    """What to do about an inconclusive study, in the suite's own terms."""
    steps = []
    seeds = len(views.suite.get("seeds", []))
    for table, words in ((views.gains, "against the same algorithm without the source"),
                         (views.vs_scratch, "against scratch training")):  # fmt: skip
        if table.empty:
            continue
        unsure = int(table["verdict"].isin([Verdict.NOT_SIGNIFICANT, Verdict.UNDETERMINED]).sum())
        if unsure:
            more = max(10, 2 * seeds)
            steps.append(
                f"{unsure} of {len(table)} comparisons {words} are not significant with "
                f"{seeds} seed(s): rerun with `seeds: [0..{more - 1}]` (finished cells are "
                "kept), or set `equivalence_margin` to test for equivalence."
            )
    flags = _edge_flags(views)
    edge = {k: v for k, v in flags.items() if "edge" in k}
    if edge:
        n = sum(edge.values())
        common = max(edge, key=lambda k: edge[k])
        steps.append(
            f"{n} cells chose a value at the edge of the search space (most often: {common}): "
            "widen that range in `search:`, or give more `trials`."
        )
    longer = sum(v for k, v in flags.items() if "max_epochs" in k)
    if longer:
        steps.append(f"{longer} cells were still improving at max_epochs: raise `max_epochs`.")
    if views.suite.get("validation", "budgeted") == "full":
        steps.append(
            "Validation is `full`: hyperparameters were chosen on the whole validation split, "
            "more labels than the budget. Few-shot results are optimistic; use "
            "`validation: budgeted` for a realistic protocol."
        )
    return steps


def headlines(views: StudyData) -> list[str]:
    """Findings in plain words, each stated only as strongly as the data supports: every
    section's ``words``, in page order."""
    return [line for section in ordered() for line in section().words(views)]


def _box(css: str, title: str, lines: list[str]) -> Markup:
    items = Markup("").join(Markup("<li>{}</li>").format(line) for line in lines)
    return Markup('<div class="{}"><b>{}</b><ul>{}</ul></div>').format(css, title, items)


@register_report_section("summary", order=10)
class Summary(Section):
    title = "Summary"

    def body(self, views: StudyData) -> Markup:
        parts = [_box("protocol", "What the verdicts rest on", protocol_lines(views))]
        items = Markup("").join(Markup("<li>{}</li>").format(line) for line in headlines(views))
        parts.append(Markup('<ul class="summary">{}</ul>').format(items))
        steps = next_steps(views)
        if steps:
            parts.append(_box("next", "What to do next", steps))
        failed = views.table("failures")
        if len(failed):
            parts.append(
                Markup('<div class="note">{}</div>').format(
                    f"{len(failed)} cells failed; see Failures. Their results are missing, "
                    "not zero."
                )
            )
        return Markup("\n").join(parts)
