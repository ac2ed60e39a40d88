"""The report as a browser sees it: headless Chromium renders it, runs its scripts without errors,
every table fits a 1280 px window (with every fold open), and a hostile source id stays text
everywhere (tables, summary, figures).

Runs in the default test run when a Chromium binary is on PATH; skips with the reason otherwise.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from atlbench.report._html import top_sections

REPO = Path(__file__).resolve().parents[2]

BROWSER = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no chromium/chromium-browser/google-chrome on PATH"
)
HOSTILE = "<script>alert(1)</script>"
SUITE = {
    "name": "browser",
    "description": f"browser check {HOSTILE}",
    "seeds": [0, 1],
    "device": "cpu",
    "sources": [
        {
            "id": HOSTILE,
            "zoo": {
                "arch": "test_resnet",
                "epochs": 1,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        },
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe", "scratch"],
    "budgets": [{"per_class": 4}],
    "estimators": ["logme"],
    "training": {"max_epochs": 1, "patience": 1, "trials": 1},
}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-extensions",
    "--hide-scrollbars",
]


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BROWSER, *FLAGS, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atlbench.sweep import SweepOptions, run_sweep

    root = tmp_path_factory.mktemp("browser")
    (root / "browser.yaml").write_text(yaml.safe_dump(SUITE))
    summary = run_sweep(
        root / "browser.yaml",
        SweepOptions(results_root=root / "results", reports_root=root / "reports", quiet=True),
    )
    assert not summary.failed and summary.report_path is not None
    return summary.report_path


@pytest.fixture(scope="module")
def dom(report: Path) -> str:
    proc = chromium("--dump-dom", report.as_uri(), cwd=report.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_screenshot_is_a_rendered_page(report: Path) -> None:
    from PIL import Image

    shot = report.parent / "shot.png"
    proc = chromium(
        f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri(), cwd=report.parent
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 4000)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 5.0  # a blank (all-white) page has zero spread
    assert (pixels < 100).mean() > 0.002  # some dark ink: text, axes, table rules


def test_scripts_ran_without_errors(dom: str) -> None:
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None and 'data-ready="1"' in body.group(0)
    root = re.search(r"<html[^>]*>", dom)
    assert root is not None and "data-errors" not in root.group(0)
    tables = dom.count('class="sortable"')
    assert tables > 0 and dom.count('data-sortable="1"') == tables


def test_every_section_is_present(dom: str) -> None:
    for section, _title in top_sections():
        assert f'id="{section}"' in dom, section
    assert 'id="domain-gap"' in dom  # the zoo source knows its pre-training data


def test_error_hook_reports_broken_script(report: Path, tmp_path: Path) -> None:
    """The check above is only meaningful if a failing script would be caught: break one."""
    broken = tmp_path / "broken.html"
    page = report.read_text().replace("</body>", "<script>undefinedFn();</script></body>")
    broken.write_text(page)
    proc = chromium("--dump-dom", broken.as_uri(), cwd=tmp_path)
    root = re.search(r"<html[^>]*>", proc.stdout)
    assert root is not None and "undefinedFn" in root.group(0)


def test_hostile_source_id_is_text_everywhere(report: Path, dom: str) -> None:
    page = report.read_text()
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The template has exactly two scripts (error hook, sorting); an injected one would be a third.
    assert len(re.findall(r"<script\b", dom)) == 2
    svgs = [
        base64.b64decode(m).decode()
        for m in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", page)
    ]
    assert svgs, "expected figures in the report"
    for svg in svgs:
        assert "<script" not in svg.lower()
    csv = (report.parent.parent / "results" / "browser" / "domain_gap.csv").read_text()
    assert HOSTILE in csv  # CSVs keep the id verbatim; escaping is the page's job


# -- every table fits a 1280 px window -------------------------------------------------------------

# Opens every fold (the row folds of wide tables, "Every cell"), then writes each table's
# rendered width and its section's content width into the page, for --dump-dom to read back.
MEASURE = """<script>
document.querySelectorAll("details").forEach(function (d) { d.open = true; });
var out = {page: document.documentElement.scrollWidth, window: window.innerWidth, tables: []};
document.querySelectorAll("table").forEach(function (t) {
  var box = t.getBoundingClientRect(), section = t.closest("section");
  out.tables.push({section: section ? section.id : "", width: box.width, right: box.right,
                   scroll: t.scrollWidth, room: section ? section.clientWidth : 0,
                   folds: t.querySelectorAll("tr.fold").length});
});
var pre = document.createElement("pre"); pre.id = "widths"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script></body>"""


def table_widths(report: Path, work: Path) -> dict[str, Any]:
    """Every table's width in a 1280 px wide window, every fold open."""
    page = work / f"measure-{report.name}"
    page.write_text(report.read_text().replace("</body>", MEASURE, 1))
    proc = chromium("--window-size=1280,2000", "--dump-dom", page.as_uri(), cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="widths">(.*?)</pre>', proc.stdout, re.S)
    assert found is not None, proc.stdout[-2000:]
    return json.loads(html.unescape(found.group(1)))


def assert_fits(widths: dict[str, Any]) -> None:
    assert widths["window"] == 1280
    assert widths["page"] <= widths["window"], widths["page"]  # no horizontal scrolling
    for table in widths["tables"]:
        where = f"{table['section']}: {table['width']:.0f} px in {table['room']} px"
        assert 0 < table["width"] <= table["room"] + 0.5, where
        assert table["scroll"] <= table["room"] + 0.5, where
        assert table["right"] <= widths["window"], where


def test_every_table_fits_1280px(report: Path, tmp_path: Path) -> None:
    widths = table_widths(report, tmp_path)
    assert len(widths["tables"]) >= 8
    assert any(t["folds"] for t in widths["tables"])  # wide tables fold, and were measured open
    assert_fits(widths)


@pytest.mark.skipif(
    not (REPO / "results" / "quickstart" / "atlbench.sqlite").exists(),
    reason="no committed results/quickstart store",
)
def test_committed_quickstart_tables_fit_1280px(tmp_path: Path) -> None:
    """The committed quickstart, whose leaderboard, comparisons and per-cell timing had 13 to 29
    columns (up to 2,303 px wide before they folded), rendered again from a copy of its store."""
    from atlbench.report import write_outputs
    from atlbench.store import Store

    store_dir = tmp_path / "quickstart"
    store_dir.mkdir()
    shutil.copy(REPO / "results" / "quickstart" / "atlbench.sqlite", store_dir)
    with Store(store_dir) as store:
        path = write_outputs(store, store_dir, tmp_path / "reports", "quickstart")
    widths = table_widths(path, tmp_path)
    folded = {t["section"] for t in widths["tables"] if t["folds"]}
    assert {"leaderboard", "same-algorithm", "vs-scratch", "timing-cells"} <= folded, folded
    assert_fits(widths)
