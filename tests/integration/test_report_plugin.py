"""A plug-in strategy adds its own report table from its own file.

This module is that file: it registers a strategy (the strategies' decorator) and a report
section (the sections' decorator) that shows a table of that strategy's cells, with a CSV, a
figure and a line for the summary. A tiny sweep with the strategy then carries the section in
its HTML report, its CSV beside the store and its frame in ``load_results``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import tiny_suite
from matplotlib.figure import Figure

from atlbench.registry import (
    REPORT_SECTIONS,
    STRATEGIES,
    register_report_section,
    register_strategy,
)
from atlbench.report._study import StudyData
from atlbench.report.sections import Section, Table
from atlbench.strategies.frozen import KNN

NAME = "knn_report_plugin"
COLUMNS = ["source", "target", "role", "budget", "seed", "test_acc"]


@pytest.fixture
def plugin() -> Iterator[None]:
    """The strategy and its section, registered for one test and removed afterwards."""

    @register_strategy(NAME)
    class PluginKNN(KNN):
        """kNN under another name: a strategy that lives outside atlbench."""

    @register_report_section("plugin-cells", order=85)  # between timing (80) and failures (90)
    class PluginCells(Section):
        title = "Plug-in kNN cells"
        nav = "Plug-in"
        intro = "<p>Every finished cell of the plug-in strategy.</p>"
        csv = "plugin_cells"
        table = Table({"source": "Source", "role": "Role", "seed": "Seed", "test_acc": "Accuracy"})

        def data(self, views: StudyData) -> pd.DataFrame:
            rec = views.records
            mine = rec[(rec["strategy"] == NAME) & (rec["status"] == "done")]
            return mine[COLUMNS].sort_values(["role", "seed"], ignore_index=True)

        def figures(self, views: StudyData) -> dict[str, Any]:
            fig = Figure(figsize=(3, 2))
            fig.subplots().bar(
                range(len(views.table(self.name))), views.table(self.name)["test_acc"]
            )
            return {"plug-in accuracy": fig}

        def words(self, views: StudyData) -> list[str]:
            return [f"The plug-in strategy finished {len(views.table(self.name))} cells."]

    try:
        yield
    finally:
        STRATEGIES.remove(NAME)
        REPORT_SECTIONS.remove("plugin-cells")


def test_plugin_strategy_adds_its_report_table(plugin: None, tmp_path: Path) -> None:
    from atlbench import load_results
    from atlbench.store import Store
    from atlbench.sweep import SweepOptions, run_sweep

    suite = tiny_suite(strategies=[NAME], estimators=[], seeds=[0, 1])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    options = SweepOptions(results_root=tmp_path / "r", reports_root=tmp_path / "rep", quiet=True)
    summary = run_sweep(tmp_path / "s.yaml", options)
    # two seeds, each with the random-init twin every frozen recipe gets
    assert summary.ran == 4 and not summary.failed, summary.failed
    assert summary.report_path is not None

    with Store(summary.results_dir) as store:
        records = store.records()
    expected = records[records["strategy"] == NAME][COLUMNS].sort_values(["role", "seed"])
    with open(summary.results_dir / "plugin_cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows[:1]] == [COLUMNS]
    assert [(r["role"], int(r["seed"])) for r in rows] == list(
        zip(expected["role"], expected["seed"], strict=True)
    )
    assert [float(r["test_acc"]) for r in rows] == pytest.approx(list(expected["test_acc"]))

    page = summary.report_path.read_text()
    section = page.split('<section id="plugin-cells">', 1)[1].split("</section>", 1)[0]
    assert "<h2>Plug-in kNN cells</h2>" in section
    assert '<a href="#plugin-cells">Plug-in</a>' in page
    assert section.count("<tr>") == 1 + 4  # the header row and one row per cell
    for value in expected["test_acc"]:
        assert f">{value:.3g}<" in section
    assert 'alt="plug-in accuracy"' in section
    # its summary line, and its place between timing (80) and failures (90)
    assert "The plug-in strategy finished 4 cells." in page.split('id="leaderboard"', 1)[0]
    anchors = re.findall(r'<section id="([a-z-]+)"><h2>', page)
    assert anchors.index("timing") < anchors.index("plugin-cells") < anchors.index("failures")

    views = load_results(summary.results_dir)
    assert len(views.table("plugin-cells")) == 4
    assert "plug-in accuracy" in views.figures()
