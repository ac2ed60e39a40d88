"""A whole study end to end through the CLI: sweep, outputs, resume, dry run, report rebuild."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atlbench.report._leaderboard import LEADERBOARD_COLUMNS

TINY = {
    "name": "tiny",
    "description": "end-to-end test <script>alert(1)</script>",
    "seeds": [0, 1],
    "device": "cpu",
    "sources": [
        {
            "id": "zoo-digits",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 2,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        },
        {
            "id": "<script>x</script>",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 2,
                "pretrain_on": {"task": "textures", "n_per_class": 20},
            },
        },
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe", "knn", "finetune", "scratch"],
    "budgets": [{"per_class": 4}],
    "estimators": ["logme", "leep"],
    "training": {"max_epochs": 2, "patience": 2, "trials": 2, "min_epoch_samples": 64},
}


def atlbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "atlbench.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    proc = atlbench("sweep", "tiny.yaml", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def test_outputs_written(swept: Path) -> None:
    results = swept / "results" / "tiny"
    for name in ("leaderboard", "estimators", "negative_transfer", "timing"):
        assert (results / f"{name}.csv").exists(), name
    with open(results / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == LEADERBOARD_COLUMNS
    # 2 sources x 3 transfer strategies, the probe's and kNN's random-init twins and the
    # scratch baseline (shared by both sources: same architecture), one budget, one target
    assert len(rows) == 9
    assert {r["strategy"] for r in rows} == {"linear_probe", "knn", "finetune", "scratch"}
    for r in rows:
        assert 0.0 <= float(r["mean_acc"]) <= 1.0
        assert r["seeds"] == "2"
    scratch = next(r for r in rows if r["strategy"] == "scratch")
    assert scratch["gain_vs_scratch"] == ""
    ft = [r for r in rows if r["strategy"] == "finetune"]
    assert all(r["gain_vs_scratch"] != "" for r in ft)


def test_report_is_escaped_and_complete(swept: Path) -> None:
    html = (swept / "reports" / "tiny.html").read_text()
    assert "<script>x</script>" not in html and "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    for section in (
        "summary",
        "leaderboard",
        "negative-transfer",
        "efficiency",
        "estimators",
        "cka",
        "timing",
        "environment",
    ):
        assert f'id="{section}"' in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # no network fetches


def test_rerun_skips_finished_cells_and_dry_run_counts_them(swept: Path) -> None:
    before = (swept / "results" / "tiny" / "leaderboard.csv").read_text()
    proc = atlbench("sweep", "tiny.yaml", cwd=swept)
    assert proc.returncode == 0, proc.stderr
    assert "ran 0 cells" in proc.stdout
    dry = atlbench("sweep", "tiny.yaml", "--dry-run", cwd=swept)
    assert "18 cells (18 done, 0 failed, 0 to run)" in dry.stdout, dry.stdout
    after = (swept / "results" / "tiny" / "leaderboard.csv").read_text()
    assert before == after


def test_report_regenerates_without_compute(swept: Path) -> None:
    report = swept / "reports" / "tiny.html"
    report.unlink()
    proc = atlbench("report", "results/tiny", cwd=swept)
    assert proc.returncode == 0, proc.stderr
    assert report.exists()
    lb = atlbench("leaderboard", "results/tiny", "--target", "d56", cwd=swept)
    assert lb.returncode == 0 and "finetune" in lb.stdout


def test_export_writes_every_record(swept: Path) -> None:
    proc = atlbench("export", "results/tiny", "all.csv", "--predictions", cwd=swept)
    assert proc.returncode == 0, proc.stderr
    with open(swept / "all.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and all(r["status"] == "done" for r in rows)
    assert all(len(json.loads(r["test_pred"])) == int(r["n_test"]) for r in rows)
    bad = atlbench("export", "results/tiny", "all.txt", cwd=swept)
    assert bad.returncode == 2 and "export to a .parquet or .csv file" in bad.stderr


def test_multitask_group_sweeps_each_member_with_the_others_alongside(tmp_path: Path) -> None:
    from atlbench.store import Store

    suite = TINY | {
        "name": "mt",
        "seeds": [0],
        "sources": TINY["sources"][:1],
        "targets": [
            {"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}},
            {"id": "d78", "builtin": {"task": "digits", "classes": [7, 8, 9]}},
            {"id": "shapes", "builtin": {"task": "shapes", "n_per_class": 12}},
        ],
        "strategies": [{"name": "multitask", "group": ["d56", "d78"]}],
        "estimators": [],
    }
    (tmp_path / "mt.yaml").write_text(yaml.safe_dump(suite))
    proc = atlbench("sweep", "mt.yaml", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = Store(tmp_path / "results" / "mt").records()
    assert sorted(records["target"]) == ["d56", "d78"]  # shapes is not in the group
    assert (records["status"] == "done").all()
    sizes = {r["target"]: r["aux_train_sizes"] for _, r in records.iterrows()}
    assert sizes == {"d56": {"d78": 12}, "d78": {"d56": 8}}  # 4 per class, the cell's budget


def test_every_registered_strategy_runs_through_the_real_sweep(tmp_path: Path) -> None:
    """One epoch, one trial each: every strategy the registry has, through runner and store."""
    from conftest import tiny_suite

    import atlbench._components  # noqa: F401
    from atlbench.registry import STRATEGIES
    from atlbench.store import Store
    from atlbench.sweep import SweepOptions, run_sweep

    entries: list = [name for name in STRATEGIES.names() if name != "multitask"]
    entries.append({"name": "multitask", "group": ["d56", "d78"]})
    suite = tiny_suite(
        targets=[{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}},
                 {"id": "d78", "builtin": {"task": "digits", "classes": [7, 8]}}],
        strategies=entries, estimators=[],
        training={"max_epochs": 1, "trials": 1, "min_epoch_samples": 16},
    )  # fmt: skip
    (tmp_path / "all.yaml").write_text(yaml.safe_dump(suite))
    options = SweepOptions(results_root=tmp_path / "r", reports_root=tmp_path / "rep", quiet=True)
    summary = run_sweep(tmp_path / "all.yaml", options)
    assert not summary.failed, summary.failed
    with Store(summary.results_dir) as store:
        records = store.records()
    # strategies for other architectures (prompt tuning needs a text encoder, VPT a ViT) are
    # skipped with their reason, never failed
    source = summary.study.source("zoo-digits")
    usable = {n for n in STRATEGIES.names() if STRATEGIES[n].supports(source) is None}
    assert usable >= {"finetune", "lora", "lp_ft", "coral", "gradual_unfreeze", "ia3"}
    assert set(records["strategy_name"]) == usable
    for name in set(STRATEGIES.names()) - usable:
        assert any(f"/ {name}: " in line for line in summary.plan.skipped), summary.plan.skipped
    assert (records["status"] == "done").all()
    assert summary.report_path is not None and summary.report_path.exists()


def test_a_log_gets_one_line_per_cell_and_json_events(tmp_path: Path, capsys) -> None:
    """Not a terminal: plain lines with accuracy, time, done/total and ETA; --log-json events."""
    from conftest import tiny_suite

    from atlbench._ui import SweepUI
    from atlbench.sweep import SweepOptions, run_sweep

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_suite(strategies=["knn", "scratch"])))
    events = tmp_path / "events.jsonl"
    ui = SweepUI(live=False, log_json=events)
    options = SweepOptions(results_root=tmp_path / "r", reports_root=tmp_path / "rep")
    summary = run_sweep(tmp_path / "s.yaml", options, ui=ui)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    total = len(summary.plan.cells) + len(summary.plan.estimates)
    assert len(lines) == total
    assert lines[-1].startswith(f"[{total}/{total}] ") and " in " in lines[-1]
    assert any("acc 0." in line and "ETA" in line for line in lines)
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [r["event"] for r in rows]
    assert kinds[0] == "sweep_start" and kinds[-1] == "sweep_end"
    cells = [r for r in rows if r["event"] == "cell_done"]
    assert len(cells) == len(summary.plan.cells)
    assert all(r["status"] == "done" and 0 <= r["test_acc"] <= 1 for r in cells)
    assert cells[-1]["done"] == total and cells[-1]["eta_s"] == 0
    # the ETA is a floor while some strategy has no finished cell (its cost is unknown)
    strategies = {c.strategy for c in summary.plan.cells}
    assert len(strategies) > 1 and cells[0]["eta_is_floor"] and not cells[-1]["eta_is_floor"]
