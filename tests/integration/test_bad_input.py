"""Bad and hostile input: one clear line, exit 2, and a store left exactly as it was.

Most cases go through :func:`run_sweep` in-process (the CLI maps ``AtlbenchError`` to one stderr
line and exit 2, which the few subprocess cases check end to end). A NaN-producing checkpoint is
the exception by design: it is found only when a cell extracts features, so it becomes a
recorded cell failure (exit 1) rather than a suite error; every other cell still runs.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from atlbench.errors import AtlbenchError, DataError, SourceError
from atlbench.record import CellRecord
from atlbench.store import Store
from atlbench.sweep import SweepOptions, run_sweep

REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "name": "bad",
    "seeds": [0],
    "device": "cpu",
    "sources": [
        {
            "id": "zoo",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 1,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        }
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe"],
    "budgets": [{"per_class": 2}],
    "estimators": [],
    "training": {"max_epochs": 1, "patience": 1, "trials": 1},
}


def csv_target(tmp: Path, text: bytes, **params: Any) -> dict[str, Any]:
    path = tmp / "data.csv"
    path.write_bytes(text)
    return {"id": "t", "csv": {"path": str(path), **params}}


def folder_target(tmp: Path, corrupt: bool) -> dict[str, Any]:
    from PIL import Image

    for cls in ("a", "b"):
        (tmp / "imgs" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(5):
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp / "imgs" / cls / f"{i}.png")
    if corrupt:
        (tmp / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return {"id": "imgs", "folder": {"path": str(tmp / "imgs"), "image_size": 16}}


def text_suite(target: dict[str, Any]) -> dict[str, Any]:
    """CSV targets are text: pair them with a (local, never loaded here) text source."""
    return {
        "sources": [{"id": "hf", "hf": {"model": "some-org/not-cached-model"}}],
        "targets": [target],
    }


Mutation = Callable[[dict[str, Any], Path], None]


def setter(**changes: Any) -> Mutation:
    def apply(suite: dict[str, Any], tmp: Path) -> None:
        suite.update(copy.deepcopy(changes))

    return apply


def with_csv(text: bytes, **params: Any) -> Mutation:
    def apply(suite: dict[str, Any], tmp: Path) -> None:
        suite.update(text_suite(csv_target(tmp, text, **params)))

    return apply


GOOD_ROWS = b"".join(f"some text {i},{'pos' if i % 2 else 'neg'}\n".encode() for i in range(20))
CASES: list[tuple[str, Mutation, str]] = [
    ("unknown top-level key", setter(sedes=[0]), r"unknown key 'sedes' \(did you mean 'seeds'\?\)"),
    ("unknown nested key", setter(training={"max_epoch": 2}), r"training\.max_epoch: unknown key"),
    ("wrong type: seeds", setter(seeds="zero"), r"seeds"),
    ("wrong type: epochs", setter(training={"max_epochs": "many"}), r"training\.max_epochs"),
    ("empty strategies", setter(strategies=[]), r"strategies: the grid is empty"),
    ("empty budgets", setter(budgets=[]), r"budgets: the grid is empty"),
    ("empty sources", setter(sources=[]), r"sources: the grid is empty"),
    (
        "duplicate source ids",
        setter(sources=[BASE["sources"][0], BASE["sources"][0]]),
        r"duplicate id\(s\) 'zoo'",
    ),
    ("unknown strategy", setter(strategies=["linear_prob"]), r"did you mean 'linear_probe'"),
    ("unknown estimator", setter(estimators=["logmee"]), r"unknown estimator 'logmee'"),
    (
        "multitask group names an unknown target",
        setter(strategies=[{"name": "multitask", "group": [BASE["targets"][0]["id"], "nope"]}]),
        r"strategies\[0\]\.group\[1\]: unknown target 'nope'",
    ),
    (
        "multitask group of one",
        setter(strategies=[{"name": "multitask", "group": [BASE["targets"][0]["id"]]}]),
        r"strategies\[0\]\.group: needs at least 2 target ids",
    ),
    (
        "unknown timm arch",
        setter(sources=[{"id": "t", "timm": {"arch": "resnet5O"}}]),
        r"unknown architecture 'resnet5O'",
    ),
    (
        "missing checkpoint",
        setter(sources=[{"id": "c", "checkpoint": {"arch": "resnet18", "path": "/no/such.pt"}}]),
        r"checkpoint file '/no/such\.pt' does not exist",
    ),
    (
        "budget larger than the data",
        setter(budgets=[{"per_class": 10_000}]),
        r"label budget 10000/class needs more examples",
    ),
    (
        "two kinds in one target",
        setter(targets=[{"id": "x", "builtin": {"task": "digits"}, "csv": {"path": "a.csv"}}]),
        r"needs exactly one of",
    ),
    (
        "csv: single class",
        with_csv(b"text,label\n" + b"".join(f"row {i},only\n".encode() for i in range(12))),
        r"only one class \('only'\)",
    ),
    (
        "csv: no label column",
        with_csv(b"text,category\n" + GOOD_ROWS),
        r"no column 'label' \(columns: text, category\)",
    ),
    (
        "csv: not utf-8",
        with_csv(b"text,label\n" + "caf\xe9,a\n".encode("latin-1") * 10),
        r"not valid utf-8 text; set `encoding:`",
    ),
    (
        "csv: missing labels",
        with_csv(b"text,label\n" + GOOD_ROWS + b"orphan,\n"),
        r"labels contain missing/NaN values",
    ),
    (
        "csv: file missing",
        setter(**text_suite({"id": "t", "csv": {"path": "/no/such.csv"}})),
        r"/no/such\.csv: CSV file does not exist",
    ),
    (
        "folder: corrupt image",
        lambda suite, tmp: suite.update(targets=[folder_target(tmp, corrupt=True)]),
        r"broken\.png: not a readable image",
    ),
    (
        "folder: split layout beside a class folder",
        lambda suite, tmp: suite.update(targets=[split_folder_target(tmp, extra="stray")]),
        r"has a train/ split folder and also 'stray'",
    ),
    (
        "csv: unknown split value",
        with_csv(
            b"text,label,part\n"
            + b"".join(
                f"row {i},{i % 2},{'train' if i % 3 else 'dev'}\n".encode() for i in range(30)
            ),
            split_column="part",
        ),
        r"column 'part' has value\(s\) \['dev'\]",
    ),
    (
        "colour shift that does not exist",
        setter(targets=[{"id": "s", "builtin": {"task": "shapes", "shift": {"colour": "purple"}}}]),
        r"targets\[0\]\.builtin\.shift\.colour: 'purple' is not allowed",
    ),
    (
        "digit classes out of range",
        setter(targets=[{"id": "d", "builtin": {"task": "digits", "classes": [11, 12]}}]),
        r"targets\[0\]\.builtin\.classes: class id 11 out of range",
    ),
    (
        "one label per class under budgeted validation",
        setter(budgets=[{"per_class": 1}]),
        r"leaves none to validate on",
    ),
    (
        "two baselines",
        setter(strategies=["scratch", {"name": "scratch", "id": "scratch-long"}]),
        r"2 baseline strategies",
    ),
    (
        "corrupt checkpoint",
        lambda suite, tmp: suite.update(sources=[checkpoint_source(tmp, b"not safetensors")]),
        r"could not be read safely",
    ),
    (
        "checkpoint of another architecture",
        lambda suite, tmp: suite.update(sources=[checkpoint_source(tmp, None, arch="resnet18")]),
        r"does not fit the architecture",
    ),
    (
        "timm tag not cached offline",
        setter(sources=[{"id": "t", "timm": {"arch": "resnet18", "pretrained_tag": "a1_in1k"}}]),
        r"timm weights for 'resnet18\.a1_in1k' is not in the local cache",
    ),
]


def split_folder_target(tmp: Path, extra: str | None = None) -> dict[str, Any]:
    from PIL import Image

    for split, n in (("train", 6), ("test", 3)):
        for cls in ("a", "b"):
            (tmp / "split" / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(
                    tmp / "split" / split / cls / f"{i}.png"
                )
    if extra:
        (tmp / "split" / extra / "a").mkdir(parents=True)
    return {"id": "split", "folder": {"path": str(tmp / "split"), "image_size": 16}}


def checkpoint_source(tmp: Path, blob: bytes | None, arch: str = "test_resnet") -> dict[str, Any]:
    """A checkpoint file: ``blob`` as its bytes, or real test_resnet weights."""
    path = tmp / "model.safetensors"
    if blob is None:
        from safetensors.torch import save_file

        from atlbench.sources.timm import create_timm

        state = create_timm("test_resnet", False, num_classes=0, input_size=32).model.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path.write_bytes(blob)
    return {"id": "ckpt", "checkpoint": {"arch": arch, "input_size": 32, "path": str(path)}}


def existing_store(root: Path) -> tuple[Path, bytes]:
    """A results dir with one finished record, as a previous sweep would have left it."""
    directory = root / "results" / "bad"
    with Store.create(directory) as store:
        labels = {"source": "s", "target": "t", "strategy": "linear_probe", "budget": "5/class"}
        row = {"key": "k" * 20, "status": "done", "test_acc": 0.5, "seed": 0} | labels
        store.put_cell(CellRecord.from_row(row))
    # fold the WAL into the main file so the bytes on disk are the whole store
    import sqlite3

    conn = sqlite3.connect(directory / Store.FILENAME)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return directory / Store.FILENAME, (directory / Store.FILENAME).read_bytes()


@pytest.mark.parametrize("name, mutate, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_suite_is_one_clear_line_and_leaves_the_store(
    name: str, mutate: Mutation, pattern: str, tmp_path: Path
) -> None:
    suite = copy.deepcopy(BASE)
    mutate(suite, tmp_path)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    db, before = existing_store(tmp_path)
    with pytest.raises(AtlbenchError) as info:
        run_sweep(
            tmp_path / "suite.yaml",
            SweepOptions(
                results_root=tmp_path / "results", reports_root=tmp_path / "reports", quiet=True
            ),
        )
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert info.value.exit_code == 2
    assert re.search(pattern, message), message
    assert db.read_bytes() == before
    assert not (tmp_path / "reports").exists()


def test_mixed_image_sizes_and_modes_are_normalised(tmp_path: Path) -> None:
    """Grey, palette, RGBA and CMYK images of any size become uniform RGB arrays."""
    from PIL import Image

    from atlbench.targets.files import FolderParams, load_folder

    modes = [("L", 9), ("P", 40), ("RGBA", 23), ("CMYK", 64), ("RGB", 17)]
    for cls in ("x", "y"):
        (tmp_path / cls).mkdir()
        for i, (mode, size) in enumerate(modes):
            suffix = "jpg" if mode == "CMYK" else "png"
            Image.new(mode, (size, size + i)).save(tmp_path / cls / f"{i}.{suffix}")
    task = load_folder("mixed", FolderParams(path=str(tmp_path), image_size=12))
    assert task.num_classes == 2
    for split in (task.train, task.val, task.test):
        assert split.inputs.shape[1:] == (12, 12, 3) and split.inputs.dtype == np.uint8
    assert len(task.train) + len(task.val) + len(task.test) == 10


def test_labels_out_of_range_are_rejected() -> None:
    from atlbench.targets._base import check_labels

    with pytest.raises(DataError, match="label 5 is out of range for 3 classes"):
        check_labels(np.array([0, 1, 5]), 3, "labels.npy")
    with pytest.raises(DataError, match="label -1 is out of range"):
        check_labels(np.array([0, -1]), 3, "labels.npy")


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {_Evil.marker}",))

    marker = ""


def test_malicious_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    from atlbench.sources.checkpoint import load_state_dict

    _Evil.marker = str(tmp_path / "pwned")
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"weight": _Evil()}))
    with pytest.raises(SourceError, match="could not be read safely"):
        load_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_nan_weights_become_a_recorded_failure(tmp_path: Path) -> None:
    """NaN features surface when a cell runs: that cell fails with a clear error, exit 1 path."""
    import torch
    from safetensors.torch import save_file

    from atlbench.sources.timm import create_timm

    encoder = create_timm("test_resnet", False, num_classes=0, input_size=32)
    state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in encoder.model.state_dict().items()
    }
    save_file(state, str(tmp_path / "nan.safetensors"))
    suite = copy.deepcopy(BASE)
    suite["sources"] = [
        {
            "id": "nan",
            "checkpoint": {
                "arch": "test_resnet",
                "input_size": 32,
                "path": str(tmp_path / "nan.safetensors"),
            },
        }
    ]
    suite["estimators"] = ["logme"]
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    options = SweepOptions(results_root=tmp_path / "r", reports_root=tmp_path, quiet=True)
    summary = run_sweep(tmp_path / "suite.yaml", options)
    assert len(summary.failed) == 1
    _, error = summary.failed[0]
    assert error.startswith("FloatingPointError: the source produced NaN/inf features")
    with Store(summary.results_dir) as store:
        estimates = store.estimates()
    assert set(estimates.loc[estimates.estimator == "logme", "status"]) == {"failed"}


def test_hostile_ids_stay_inside_and_are_escaped(tmp_path: Path) -> None:
    """A `../` suite name and target id, and a `<script>` source id: sanitised and escaped."""
    suite = copy.deepcopy(BASE)
    suite["name"] = "../../escape"
    suite["sources"][0]["id"] = "<script>alert(1)</script>"
    suite["targets"][0]["id"] = "../../../t"
    work = tmp_path / "work"
    work.mkdir()
    (work / "suite.yaml").write_text(yaml.safe_dump(suite))
    summary = run_sweep(
        work / "suite.yaml",
        SweepOptions(results_root=work / "results", reports_root=work / "reports", quiet=True),
    )
    assert not summary.failed
    outside = [p for p in tmp_path.rglob("*") if p != work and not p.is_relative_to(work)]
    assert outside == [], outside
    assert summary.results_dir.resolve().is_relative_to((work / "results").resolve())
    reports = list((work / "reports").iterdir())
    assert len(reports) == 1 and reports[0].suffix == ".html"
    html = reports[0].read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "atlbench.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "name, mutate, pattern",
    [
        ("unknown key", setter(sedes=[0]), "unknown key 'sedes'"),
        ("csv without label column", with_csv(b"text,category\n" + GOOD_ROWS), "no column 'label'"),
        ("hf model offline", with_csv(b"text,label\n" + GOOD_ROWS), "hub is unreachable"),
    ],
    ids=["unknown-key", "csv-no-label", "hf-offline"],
)
def test_cli_exit_2_with_one_line(
    name: str, mutate: Mutation, pattern: str, tmp_path: Path
) -> None:
    suite = copy.deepcopy(BASE)
    mutate(suite, tmp_path)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    db, before = existing_store(tmp_path)
    proc = cli("sweep", "suite.yaml", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], proc.stderr
    assert db.read_bytes() == before
