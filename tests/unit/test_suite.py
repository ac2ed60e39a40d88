"""Suite validation: good suites parse, every bad one gets one line naming file, field and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atlbench.errors import SuiteError
from atlbench.suite import load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict:
    return {
        "name": "t",
        "seeds": [0],
        "sources": [{"id": "a", "zoo": {"arch": "test_resnet", "pretrain_on": "shapes"}}],
        "targets": [{"id": "d", "builtin": {"task": "digits", "classes": [5, 6]}}],
        "strategies": ["linear_probe", "scratch"],
        "budgets": [{"per_class": 5}],
    }


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suites_validate(path: Path) -> None:
    suite = load_suite(path)
    assert suite.name and suite.sources and suite.targets and suite.strategies


def test_strategy_shorthand_keeps_params() -> None:
    data = base() | {"strategies": ["knn", {"name": "finetune", "id": "ft-head", "layers": "head"}]}
    suite = parse_suite(data)
    assert [s.label for s in suite.strategies] == ["knn", "ft-head"]
    assert suite.strategies[1].params == {"layers": "head"}


BAD_CASES = [
    ("unknown top-level key", {"sedes": [0]}, "sedes: unknown key 'sedes' (did you mean 'seeds'?)"),
    (
        "unknown source key",
        {"sources": [{"id": "a", "zoo": {}, "pretraind": 1}]},
        "sources[0].pretraind",
    ),
    (
        "two source kinds",
        {"sources": [{"id": "a", "zoo": {"pretrain_on": "shapes"}, "timm": {}}]},
        "needs exactly one of",
    ),
    ("no source kind", {"sources": [{"id": "a"}]}, "needs exactly one of"),
    ("wrong seed type", {"seeds": ["zero"]}, "seeds[0]"),
    ("duplicate seeds", {"seeds": [1, 1]}, "seeds must be distinct"),
    ("empty sources", {"sources": []}, "sources: the grid is empty"),
    ("empty budgets", {"budgets": []}, "budgets: the grid is empty"),
    (
        "duplicate ids",
        {"targets": [{"id": "d", "builtin": {"task": "digits"}}] * 2},
        "duplicate id",
    ),
    ("budget with both kinds", {"budgets": [{"per_class": 2, "fraction": 0.5}]}, "exactly one of"),
    ("fraction above one", {"budgets": [{"fraction": 1.5}]}, "budgets[0].fraction"),
    ("unknown strategy", {"strategies": ["finetun"]}, "did you mean 'finetune'"),
    ("unknown estimator", {"estimators": ["logmee"]}, "did you mean 'logme'"),
    ("bad device", {"device": "tpu"}, "device"),
    ("negative lr", {"training": {"lr_grid": [-1.0]}}, "training.lr_grid"),
    (
        "unknown builtin task",
        {"targets": [{"id": "x", "builtin": {"task": "digitz"}}]},
        "targets[0].builtin.task",
    ),
    (
        "unknown timm arch",
        {"sources": [{"id": "a", "timm": {"arch": "resnet5O"}}]},
        "unknown architecture 'resnet5O' (did you mean 'resnet50'?)",
    ),
    (
        "unknown zoo arch",
        {"sources": [{"id": "a", "zoo": {"arch": "resnt18", "pretrain_on": "shapes"}}]},
        "sources[0].zoo",
    ),
]


@pytest.mark.parametrize(("case", "patch", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_suite_one_clear_line(case: str, patch: dict, expected: str) -> None:
    with pytest.raises(SuiteError) as info:
        parse_suite(base() | patch, "suites/x.yaml")
    message = str(info.value)
    assert message.startswith("suites/x.yaml: "), message
    assert expected in message, message
    assert "\n" not in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsources: [\n  - id: a\n")
    with pytest.raises(SuiteError, match=r"broken.yaml: line \d+: invalid YAML"):
        load_suite(path)


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SuiteError, match="must be a YAML mapping"):
        load_suite(path)
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")


def test_cli_exit_code_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        yaml.safe_dump(base() | {"sources": [{"id": "a", "timm": {"arch": "resnet5O"}}]})
    )
    proc = subprocess.run(
        [sys.executable, "-m", "atlbench.cli", "sweep", str(path), "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sources[0].timm" in lines[0] and "resnet50" in lines[0], proc.stderr
    assert not (tmp_path / "t").exists()  # nothing written for a bad suite
