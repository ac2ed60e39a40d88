"""Drift detection and domain gap on real zoo features: a strong shift is found, a random split
of one task is not, and the sweep-side domain gap ranks shifted data as further away."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from atlbench._drift import detect_drift, render
from atlbench.artifacts import DOMAIN_GAP
from atlbench.cli import main
from atlbench.executors.local import LocalExecutor
from atlbench.plan import DomainGapTask, build_plan
from atlbench.store import Store
from atlbench.study import load_study
from atlbench.sweep import run_artifact_tasks

SUITE = {
    "name": "drift-test",
    "device": "cpu",
    "seeds": [0],
    "sources": [
        {
            "id": "zd",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 1,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        },
    ],
    "targets": [
        {"id": "digits", "builtin": {"task": "digits", "classes": [3, 4, 5, 6]}},
        {
            "id": "digits-inv",
            "builtin": {"task": "digits", "classes": [3, 4, 5, 6], "shift": {"invert": True}},
        },
    ],
    "strategies": ["linear_probe", "scratch"],
    "budgets": [{"per_class": 4}],
}


@pytest.fixture(scope="module")
def suite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drift") / "drift.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def test_inverted_digits_drift(suite_path: Path) -> None:
    report = detect_drift(suite_path, "zd", "digits", "digits-inv", n_permutations=200)
    assert report.result.drifted
    assert report.result.p_value < 0.01  # the smallest attainable p is 1/201
    assert report.short_verdict.startswith("drift detected")
    assert "Drift detected" in render(report)


def test_random_split_of_one_task_does_not_drift(suite_path: Path) -> None:
    # train and test are disjoint random splits of one pool, so the null holds. A calibrated test
    # still rejects 5% of the time; seed 0 is fixed so this run is deterministic, not "lucky".
    same = detect_drift(
        suite_path, "zd", "digits", "digits", new_split="test", n_permutations=200, seed=0
    )
    shifted = detect_drift(suite_path, "zd", "digits", "digits-inv", n_permutations=200)
    assert not same.result.drifted and same.result.p_value >= 0.05
    assert same.short_verdict.startswith("no evidence of drift")
    assert same.result.frechet < shifted.result.frechet
    assert same.result.n_reference + same.result.n_new < 400 + 400


def test_cli_json_exit_codes(suite_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> int:
        try:
            main(["drift", str(suite_path), "--source", "zd", *args])
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    args = ("--reference", "digits", "--new", "digits-inv", "--permutations", "50", "--json")
    assert run(*args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["drifted"] is True and payload["n_permutations"] == 50
    assert set(payload) >= {"mmd2", "p_value", "frechet", "verdict", "short_verdict"}
    assert run("--reference", "digits", "--new", "nope") == 2
    assert "no target 'nope'" in capsys.readouterr().err
    assert run("--reference", "digits", "--new", "digits") == 2
    assert "--new-split" in capsys.readouterr().err
    assert run("--reference", "digits", "--new", "digits-inv", "--alpha", "1.5") == 2


def test_domain_gap_artifacts_and_resume(suite_path: Path, tmp_path: Path) -> None:
    study = load_study(suite_path)
    tasks = [t for t in build_plan(study).artifacts if isinstance(t, DomainGapTask)]
    pairs = {(t.source, t.target) for t in tasks}
    assert pairs == {("zd", "digits"), ("zd", "digits-inv")}  # scratch cells are not pairs
    executor = LocalExecutor("cpu")
    with Store.create(tmp_path) as store:
        first = run_artifact_tasks(store, study, tasks, executor, tmp_path)
        assert len(first.computed) == 2 and not first.skipped
        gaps = {p["target"]: p for p in store.artifacts(DOMAIN_GAP)}
        # The source was pre-trained on plain digits: inverted digits must look further away,
        # on the reference ruler and in the source's own features alike.
        for ruler in ("reference", "source_space"):
            near, far = gaps["digits"][ruler], gaps["digits-inv"][ruler]
            assert far["mmd"] > near["mmd"] and far["frechet"] > near["frechet"]
            for gap in (near, far):
                assert 0.0 < gap["mmd_p"] <= 1.0
                assert gap["n_target"] > 0 and gap["n_source"] > 0
        assert all(g["source"] == "zd" for g in gaps.values())
        assert gaps["digits"]["reference"]["embedding"] == "8x8 RGB pixel means in [0, 1]"
        assert "embedding" not in gaps["digits"]["source_space"]  # the report names it
        again = run_artifact_tasks(store, study, tasks, executor, tmp_path)
        assert again.computed == [] and again.existing == 2
