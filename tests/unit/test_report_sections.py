"""Report sections as registered views: the page order, the CSV list and the left-out sections
all come from the registry, and wide tables fold their detail columns under each row."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlbench.registry import REPORT_SECTIONS, register_report_section
from atlbench.report import write_csvs
from atlbench.report._html import render_report, top_sections
from atlbench.report._leaderboard import LEADERBOARD_COLUMNS
from atlbench.report._study import StudyData
from atlbench.report._tables import MAX_COLUMNS, table_html
from atlbench.report._views import Views
from atlbench.report.sections import Section, Table, children, ordered


def test_built_in_sections_in_page_order() -> None:
    assert [name for name, _ in top_sections()] == [
        "summary", "leaderboard", "negative-transfer", "failure-modes", "efficiency",
        "estimators", "cka", "timing", "failures", "environment",
    ]  # fmt: skip
    assert [s.name for s in children("efficiency")] == [
        "labels-saved", "accuracy-vs-cost", "gain-per-hour", "domain-gap",
    ]  # fmt: skip
    names = [s.name for s in ordered()]
    assert names.index("failure-modes") < names.index("forgetting") < names.index("efficiency")
    assert [s.csv for s in ordered() if s.csv] == [
        "leaderboard", "negative_transfer", "seed_rounds", "forgetting", "label_mapping",
        "domain_gap", "estimators", "cka", "timing_summary", "timing",
    ]  # fmt: skip


@pytest.fixture
def extra() -> Iterator[type[Section]]:
    """A plug-in section with a CSV and a record column it needs."""

    @register_report_section("extra-test", order=95)
    class Extra(Section):
        title = "Extra"
        requires = ("extra_metric",)
        csv = "extra_test"
        table = Table({"source": "Source", "extra_metric": "Extra metric"})

        def data(self, views: StudyData) -> pd.DataFrame:
            rec = views.records
            return rec.reindex(columns=["source", "extra_metric"]).dropna()

    try:
        yield Extra
    finally:
        REPORT_SECTIONS.remove("extra-test")


def test_a_section_registers_once(extra: type[Section]) -> None:
    with pytest.raises(ValueError, match="report section 'extra-test' is registered twice"):
        register_report_section("extra-test", order=1)(extra)
    assert "extra-test" in [name for name, _ in top_sections()]


def test_csv_list_comes_from_the_registry(extra: type[Section], tmp_path: Path) -> None:
    """Without results, the four documented CSVs are written with their header only; a
    section's CSV appears when it has rows."""
    paths = write_csvs(Views(pd.DataFrame()), tmp_path)
    assert set(paths) == {"leaderboard", "estimators", "negative_transfer", "timing"}
    with open(paths["leaderboard"]) as f:
        assert next(csv.reader(f)) == LEADERBOARD_COLUMNS
    # failed cells: no built-in table has rows, the plug-in's does
    records = pd.DataFrame({"status": ["failed", "failed"], "source": ["a", "b"],
                            "extra_metric": [0.5, np.nan]})  # fmt: skip
    paths = write_csvs(Views(records), tmp_path)
    assert "extra_test" in paths
    assert paths["extra_test"].read_text() == "source,extra_metric\na,0.5\n"


def test_sections_without_their_columns_are_left_out(extra: type[Section]) -> None:
    records = pd.DataFrame(
        {"status": "done", "source": ["a", "b"], "target": "t", "strategy": "probe",
         "role": "transfer", "budget": "5/class", "seed": 0, "test_acc": [0.5, 0.7],
         "n_train": 10}
    )  # fmt: skip
    views = Views(records, meta={"suite": {"imported": {"origin": "a table"}}})
    assert set(views.omitted) == {"negative-transfer", "efficiency", "timing", "extra-test"}
    assert views.omitted["extra-test"] == (
        "Left out: the records have no extra_metric (imported results carry only what the "
        "table gave)."
    )
    page = render_report(views, "t")
    extra_html = page.split('<section id="extra-test">', 1)[1].split("</section>", 1)[0]
    assert "Left out: the records have no extra_metric" in extra_html
    assert "<table" not in extra_html


def test_wide_table_folds_detail_columns_under_each_row() -> None:
    frame = pd.DataFrame(
        {f"c{i}": [f"r{r}c{i}" for r in range(3)] for i in range(20)} | {"_hidden": [1, 2, 3]}
    )
    frame["c3"] = ["<b>x</b>", "y", "z"]
    page = str(table_html(frame, ["c0", "c1", "c2", "c3"], {"c0": "First"}))
    head = re.search(r"<thead>(.*?)</thead>", page).group(1)  # type: ignore[union-attr]
    assert re.findall(r"<th[^>]*>([^<]*)</th>", head) == ["First", "c1", "c2", "c3", "More"]
    rows = re.findall(r"<tr>(.*?)</tr><tr class=\"fold\">(.*?)</tr>", page)
    assert len(rows) == 3  # each row, then its fold
    for r, (main, fold) in enumerate(rows):
        assert "16 more" in main
        terms = re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", fold)
        assert terms == [(f"c{i}", f"r{r}c{i}") for i in range(4, 20)]
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "_hidden" not in page
    # naming more main columns than fit shows the first MAX_COLUMNS and folds the rest
    capped = str(table_html(frame, list(frame.columns[:15])))
    head = re.search(r"<thead>(.*?)</thead>", capped).group(1)  # type: ignore[union-attr]
    assert head.count("<th") == MAX_COLUMNS + 1
    assert f"{20 - MAX_COLUMNS} more" in capped


def test_narrow_table_has_no_fold() -> None:
    frame = pd.DataFrame({"what": ["device"], "value": ["cpu"]})
    page = str(table_html(frame, ["what", "value"]))
    assert "fold" not in page and "More" not in page and page.count("<tr>") == 2
