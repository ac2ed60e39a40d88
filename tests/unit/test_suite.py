"""Suite validation: good suites parse, every bad one gets one line naming file, field and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atlbench.errors import SuiteError
from atlbench.study import load_study, parse_study
from atlbench.suite import load_suite

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
    study = load_study(path)
    assert study.name and study.sources and study.targets and study.strategies
    assert sum(s.is_baseline for s in study.strategies) <= 1


def test_strategy_shorthand_keeps_params() -> None:
    data = base() | {"strategies": ["knn", {"name": "finetune", "id": "ft-head", "layers": "head"}]}
    study = parse_study(data)
    assert [s.label for s in study.strategies] == ["knn", "ft-head"]
    assert study.strategies[1].params.layers == "head"
    assert not study.strategies[1].trains_encoder  # a head-only fine-tune leaves the encoder


def test_baseline_is_a_role_not_a_label() -> None:
    data = base() | {
        "strategies": [
            {"name": "scratch", "id": "scratch-long"},
            {"name": "finetune", "id": "scratch"},
        ]
    }
    study = parse_study(data)
    assert study.baseline is not None and study.baseline.label == "scratch-long"
    assert not study.strategy("scratch").is_baseline


def test_explicit_parameters_leave_the_search_and_scratch_searches_as_high() -> None:
    data = base() | {
        "strategies": [
            "finetune",
            {"name": "finetune", "id": "fixed", "backbone_lr_mult": 0.1},
            "scratch",
        ]
    }
    study = parse_study(data)
    searched, fixed, scratch = study.strategies
    assert set(searched.search) == {"lr", "backbone_lr_mult"}
    assert fixed.search["backbone_lr_mult"] == 0.1
    # scratch is never searched below fine-tuning's learning rates (He et al. 2019 give it large
    # ones); fine-tuning reaches as high, with its backbone multiplier searched
    assert scratch.search["lr"].high >= searched.search["lr"].high
    assert searched.training.trials == scratch.training.trials  # equal by construction


BAD_CASES = [
    ("unknown top-level key", {"sedes": [0]}, "sedes: unknown key 'sedes' (did you mean 'seeds'?)"),
    (
        "unknown source key",
        {"sources": [{"id": "a", "zoo": {"pretrain_on": "shapes"}, "pretraind": 1}]},
        "sources[0].pretraind: unknown key 'pretraind'",
    ),
    (
        "unknown zoo key",
        {"sources": [{"id": "a", "zoo": {"pretrain_on": "shapes", "epoch": 3}}]},
        "sources[0].zoo.epoch: unknown key 'epoch' (did you mean 'epochs'?)",
    ),
    (
        "bad zoo pre-training task",
        {"sources": [{"id": "a", "zoo": {"pretrain_on": {"task": "shapes", "classes": 1}}}]},
        "sources[0].zoo.pretrain_on.classes",
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
    (
        "negative lr",
        {"training": {"search": {"lr": {"low": -1.0, "high": 1.0}}}},
        "training.search.lr",
    ),
    (
        "trials per strategy",
        {"strategies": [{"name": "scratch", "training": {"trials": 9}}]},
        "'trials' is the same for every strategy",
    ),
    (
        "unknown search knob",
        {"strategies": [{"name": "finetune", "search": {"lr_mul": [0.1, 1.0]}}]},
        "strategies[0].search.lr_mul: finetune has no searchable 'lr_mul'",
    ),
    (
        "search on a frozen strategy",
        {"strategies": [{"name": "knn", "search": {"lr": [0.1]}}]},
        "strategies[0]: knn is not trained",
    ),
    (
        "two baselines",
        {"strategies": ["scratch", {"name": "scratch", "id": "scratch-long"}]},
        "2 baseline strategies (scratch, scratch-long)",
    ),
    (
        "unknown strategy param",
        {"strategies": [{"name": "finetune", "layerz": 2}]},
        "strategies[0].layerz: unknown key 'layerz' (did you mean 'layers'?)",
    ),
    (
        "colour shift not in the list",
        {"targets": [{"id": "x", "builtin": {"task": "shapes", "shift": {"colour": "purple"}}}]},
        "targets[0].builtin.shift.colour: 'purple' is not allowed",
    ),
    (
        "digit classes out of range",
        {"targets": [{"id": "x", "builtin": {"task": "digits", "classes": [11, 12]}}]},
        "targets[0].builtin.classes: class id 11 out of range 0..9",
    ),
    (
        "unknown shape class",
        {"targets": [{"id": "x", "builtin": {"task": "shapes", "classes": ["circle", "blob"]}}]},
        "unknown class 'blob'",
    ),
    (
        "two targets with the same data",
        {
            "targets": [
                {"id": "d", "builtin": {"task": "digits", "classes": [5, 6]}},
                {"id": "e", "builtin": {"task": "digits", "classes": [5, 6]}},
            ]
        },
        "targets 'd' and 'e' have identical content",
    ),
    (
        "unknown timm tag",
        {"sources": [{"id": "a", "timm": {"arch": "resnet18", "pretrained_tag": "a9_in1k"}}]},
        "timm has no pretrained tag 'a9_in1k' for 'resnet18'",
    ),
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
    (
        "schedule max below start",
        {"seeds": {"start": 5, "max": 3}},
        "seeds: max (3) must be >= start (5)",
    ),
    ("schedule typo", {"seeds": {"start": 3, "stpe": 2}}, "seeds.stpe: unknown key 'stpe'"),
    ("schedule of one seed", {"seeds": {"start": 1}}, "seeds.start"),
    ("compute without a schedule", {"compute": {"cells": 10}}, "compute: caps an adaptive sweep"),
    (
        "compute with both caps",
        {"seeds": {}, "compute": {"cells": 10, "hours": 1}},
        "give exactly one of cells or hours",
    ),
]


def test_seed_schedule_and_compute_cap_parse() -> None:
    study = parse_study(
        base() | {"seeds": {"start": 3, "step": 3, "max": 9}, "compute": {"hours": 0.5}}
    )
    suite = study.suite
    assert suite.seeds == (0, 1, 2) and suite.all_seeds == tuple(range(9))
    assert suite.schedule is not None and suite.schedule.looks == (3, 6, 9)
    assert suite.compute is not None and suite.compute.hours == 0.5 and not suite.racing
    again = parse_study(suite.model_dump(mode="json"))  # what the store keeps parses back
    assert again.suite.schedule == suite.schedule
    default = parse_study(base() | {"seeds": {}}).suite.schedule
    assert default is not None and default.looks == (3, 5, 7, 9, 11, 13, 15)
    assert parse_study(base() | {"seeds": [4, 7]}).suite.schedule is None


@pytest.mark.parametrize(("case", "patch", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_suite_one_clear_line(case: str, patch: dict, expected: str) -> None:
    with pytest.raises(SuiteError) as info:
        parse_study(base() | patch, "suites/x.yaml")
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
