"""The typed cell record: what a cell writes reads back typed, old stores migrate, bad records are
named, and the readers of diagnostics read fields the record declares."""

from __future__ import annotations

import ast
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_suite

from atlbench.analysis._failure_modes import forgetting_table, overfit_flags, overfitting_table
from atlbench.errors import AtlbenchError
from atlbench.record import (
    DTYPES,
    FIELD_GROUPS,
    RENAMED_V1,
    SCHEMA_VERSION,
    CellRecord,
    Diagnostics,
    Identity,
    Metrics,
    RecordError,
    Role,
    Status,
    Tuning,
    Verdict,
)
from atlbench.store import Store

ROOT = Path(__file__).resolve().parents[2]

# One record exactly as atlbench 0.2 wrote it (results/quickstart, the fine-tuned zoo-digits04 cell
# on digits5-9, 5/class, seed 0), plus one strategy extra of the kind LP-FT wrote.
V1_RECORD: dict[str, Any] = json.loads(
    """{"key": "e23242310a5b407c51cd", "source": "zoo-digits04", "source_id": "zoo-digits04",
 "target": "digits5-9", "strategy": "finetune", "strategy_name": "finetune", "role": "transfer",
 "budget": "5/class", "budget_kind": "per_class", "budget_value": 5.0, "seed": 0,
 "arch": "timm:test_resnet@24", "suite": "quickstart", "device": "cpu", "dtype": "float32",
 "versions": {"python": "3.11.7", "atlbench": "0.2.0", "torch": "2.14.1", "timm": "1.0.31",
  "transformers": "5.25.0", "scikit-learn": "1.9.1", "numpy": "2.4.6"},
 "created_at": 1796406358.1151161, "n_train": 25, "selection": "hold-out", "n_fit": 20,
 "n_val": 5, "n_test": 269, "num_classes": 5, "test_acc": 0.8587360594795539,
 "test_macro_f1": 0.8545548259789746, "val_acc": 1.0, "trainable_params": 373173,
 "total_params": 373658, "trains_encoder": true, "validation": "budgeted",
 "hparams": {"layers": "all", "backbone_lr_mult": 0.6451194812038942, "layer_decay": null,
  "l2sp": 0.0, "lr": 0.0064511948120389425},
 "trials": [{"backbone_lr_mult": 0.04650301358752225, "lr": 0.0004650301358752225,
   "val_acc": 0.2, "val_loss": 1.4345782995224, "epochs": 5, "best_epoch": 5, "rung": 0,
   "stopped_early": false},
  {"backbone_lr_mult": 0.6451194812038942, "lr": 0.0064511948120389425, "val_acc": 1.0,
   "val_loss": 0.024718275293707848, "epochs": 16, "best_epoch": 12, "rung": 2,
   "stopped_early": true}],
 "n_trials": 4, "feature_time_s": 0.0, "cost_s": 2.096260868000172,
 "edge_flags": ["backbone_lr_mult at the high edge of [0.03, 1]",
  "lr at the high edge of [0.0003, 0.01]"],
 "source_acc_before": 0.9925925925925926, "source_acc_after": 0.6703703703703704,
 "forgetting": 0.3222222222222222, "train_time_s": 0.47630911499800277,
 "data_wait_s": 0.0062660009953106055, "compute_time_s": 0.47004311400269216,
 "selection_time_s": 1.5540601529992273, "time_to_best_s": 0.4530974810004409,
 "time_to_90pct_s": 0.07874039199850813, "train_samples_per_s": 3709.251021054406,
 "eval_samples_per_s": 7494.773161992721, "warmup_time_s": 0.04054913999971177,
 "compile_time_s": 0.0, "epochs": 12.0, "best_epoch": 12.0, "peak_mem_mb": 1016.828125,
 "extra_search": {"backbone_lr_mult": {"low": 0.03, "high": 1.0, "scale": "log"},
  "lr": {"low": 0.0003, "high": 0.01, "scale": "log"}},
 "extra_schedule": "successive_halving", "extra_n_trials": 4, "extra_retrain_epochs": 12,
 "extra_micro_batch": 32, "extra_oom_retries": 0,
 "extra_val_curve": [0.6, 1.0, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
 "extra_train_curve": [0.64, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
 "extra_train_val_gap": 0.0,
 "extra_checkpoint": "results/quickstart/checkpoints/e23242310a5b407c51cd/best.safetensors",
 "extra_prefix_cache": "off: no frozen block", "extra_probe_C": 0.5,
 "status": "done", "wall_time_s": 2.1246344989995123}"""
)


def minimal(key: str = "k1", **fields: Any) -> dict[str, Any]:
    return {"key": key, "status": "done", "test_acc": 0.5, "source": "s", "target": "t",
            "strategy": "linear_probe", "budget": "5/class", "seed": 0} | fields  # fmt: skip


# -- a real cell, through the worker and the store ------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every cell of a tiny study (probe and its random-init twin, fine-tune with a kept
    checkpoint and a known source task, scratch) run by the worker and stored."""
    from atlbench._runner import Worker, cell_identity
    from atlbench.plan import build_plan
    from atlbench.study import parse_study

    root = tmp_path_factory.mktemp("record")
    suite = tiny_suite(estimators=[], training={"keep_checkpoints": True})
    study = parse_study(suite)
    plan = build_plan(study)
    worker = Worker(study, torch.device("cpu"))
    records = []
    with Store.create(root) as store:
        store.set_plan([cell_identity(c) for c in plan.cells])
        for cell in plan.cells:
            record, preds = worker.run_cell(cell, checkpoint_root=root / "checkpoints")
            assert record.status == Status.DONE, record.error
            store.put_cell(record, preds)
            records.append(record)
    with Store(root) as store:
        return {"records": records, "frame": store.records(), "cells": store.cells()}


def test_every_field_a_cell_writes_reads_back_with_its_declared_dtype(swept: dict) -> None:
    frame = swept["frame"]
    written = {c for r in swept["records"] for c, v in r.to_row().items() if v is not None}
    assert written <= set(frame.columns)
    for column in written & set(DTYPES):
        assert str(frame[column].dtype) == DTYPES[column], column
    # the store gives back exactly what the worker made
    assert swept["cells"] == swept["records"]


def test_a_fine_tuned_cell_fills_every_field(swept: dict) -> None:
    """Every declared field has a producer: a field nobody fills is a field nobody reads."""
    tuned = next(r for r in swept["records"] if r.identity.strategy == "finetune")
    empty = {c for c, v in tuned.to_row().items() if v is None}
    assert empty == {"error", "traceback"}
    assert tuned.identity.role == Role.TRANSFER and tuned.identity.trains_encoder is True
    assert Path(tuned.artifacts.checkpoint or "").is_file()
    assert tuned.tuning.n_trials == len(tuned.tuning.trials or []) == 2
    assert tuned.strategy_facts == {}  # fine-tuning has nothing of its own to add
    probe = next(r for r in swept["records"] if r.identity.role == Role.RANDOM_INIT)
    assert probe.tuning.n_trials == 0 and probe.tuning.edge_flags == []
    assert probe.diagnostics.train_val_gap is None and probe.artifacts.checkpoint is None


def test_the_failure_mode_tables_read_what_a_cell_writes(swept: dict) -> None:
    frame = swept["frame"]
    assert len(overfit_flags(frame)) == 2  # the two trained cells: fine-tune and scratch
    assert len(forgetting_table(frame)) == 2  # fine-tune and the probe on the pre-trained source


# -- readers read declared fields ------------------------------------------------------------
def _value(kind: str) -> Any:
    return {"float | None": 0.4, "list[float] | None": [0.2, 0.9, 0.8, 0.7, 0.6, 0.5]}[kind]


def test_renaming_a_diagnostic_field_breaks_this_test_not_a_table() -> None:
    """Fill every Diagnostics field by its declared name: a reader left on an old name finds
    nothing and its table comes out empty here."""
    fields = dataclasses.fields(Diagnostics)
    diagnostics = Diagnostics(**{f.name: _value(str(f.type)) for f in fields})
    labels = {"source": "s", "target": "t", "strategy": "finetune", "budget": "5/class"}
    rows = [
        CellRecord(
            identity=Identity(key=f"k{seed}", seed=seed, trains_encoder=True, **labels),
            status=Status.DONE,
            metrics=Metrics(test_acc=0.5),
            tuning=Tuning(best_epoch=1),
            diagnostics=diagnostics,
        ).to_row()
        for seed in range(3)
    ]
    frame = pd.DataFrame(rows).astype({c: t for c, t in DTYPES.items() if c in rows[0]})
    flags = overfit_flags(frame, gap=0.1)
    assert len(flags) == 3 and flags["overfit"].all()  # gap 0.4 > 0.1, peaked at epoch 1 of 6
    over = overfitting_table(frame, gap=0.1)
    assert over["overfit_cells"].tolist() == [3]
    forget = forgetting_table(frame)
    assert forget[["source_acc_before", "forgetting"]].iloc[0].tolist() == pytest.approx([0.4] * 2)
    # and what they read is declared where the record keeps it
    assert {"train_val_gap", "val_curve", "forgetting"} <= FIELD_GROUPS["diagnostics"]
    assert "best_epoch" in FIELD_GROUPS["tuning"]


# -- old stores ---------------------------------------------------------------------------------
def _old_store(directory: Path) -> None:
    """A store as atlbench 0.2 left it: the flat record, no schema version."""
    with Store.create(directory) as store:
        store.set_plan([{k: V1_RECORD[k] for k in ("key", "source", "target", "strategy")}])
    conn = sqlite3.connect(directory / Store.FILENAME)
    conn.execute(
        "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?)",
        (V1_RECORD["key"], "done", json.dumps(V1_RECORD), None, None, None, 0.0),
    )
    conn.commit()
    conn.close()


def test_an_old_store_migrates_on_read_and_on_a_writable_open(tmp_path: Path) -> None:
    _old_store(tmp_path)
    with Store(tmp_path) as store:  # read-only: migrated as it is read
        (record,) = store.cells()
        frame = store.records()
    assert not [c for c in frame.columns if c.startswith("extra_")]
    row = frame.iloc[0]
    assert row["train_val_gap"] == 0.0 and row["schedule"] == "successive_halving"
    assert row["checkpoint"].endswith("best.safetensors") and row["n_trials"] == 4
    assert row["probe_C"] == 0.5  # a strategy's own extra keeps its name, without the prefix
    assert row["epochs"] == 12 and str(frame["epochs"].dtype) == "Int64"
    assert record.tuning.retrain_epochs == 12 and record.strategy_facts == {"probe_C": 0.5}
    # every renamed column of schema 1 reads back under its new name, with the same value
    for old, new in RENAMED_V1.items():
        got = row[new]
        assert (got.tolist() if isinstance(got, np.ndarray) else got) == V1_RECORD[old], old
    with Store.create(tmp_path):  # a writable open rewrites it in today's form
        pass
    conn = sqlite3.connect(tmp_path / Store.FILENAME)
    (raw,) = conn.execute("SELECT record FROM cells").fetchone()
    conn.close()
    stored = json.loads(raw)
    assert stored["schema_version"] == SCHEMA_VERSION and "extra_checkpoint" not in raw
    assert CellRecord.from_json(stored) == record


@pytest.mark.skipif(
    not (ROOT / "results" / "quickstart" / Store.FILENAME).is_file(),
    reason="the quickstart store is not committed (gitignored); it exists after a local sweep",
)
def test_the_committed_quickstart_store_reads_with_todays_names() -> None:
    """A store written before the typed record (schema 1) reads with today's field names."""
    with Store(ROOT / "results" / "quickstart") as store:
        frame = store.records()
    # 144 cells in the first round, then the seed rounds' (440 in the committed run)
    assert len(frame) >= 144 and not [c for c in frame.columns if c.startswith("extra_")]
    tuned = frame[frame["strategy"] == "finetune"]
    assert tuned["train_val_gap"].notna().all() and tuned["checkpoint"].notna().all()
    assert str(frame["trains_encoder"].dtype) == "boolean"
    assert set(frame["role"]) == {r.value for r in Role}


# -- bad records ------------------------------------------------------------------------------
def test_a_bad_field_is_named_when_the_record_is_built() -> None:
    with pytest.raises(RecordError, match=r"'n_train'.*integer"):
        CellRecord.from_row(minimal(n_train="many"))
    with pytest.raises(RecordError, match=r"'seed': missing"):
        CellRecord.from_row({k: v for k, v in minimal().items() if k != "seed"})
    with pytest.raises(RecordError, match=r"'role'.*one of transfer, baseline, random_init"):
        CellRecord.from_row(minimal(role="teacher"))
    with pytest.raises(RecordError, match=r"'test_acc': missing for a finished cell"):
        CellRecord.from_row({k: v for k, v in minimal().items() if k != "test_acc"})
    identity = CellRecord.from_row(minimal()).identity
    with pytest.raises(RecordError, match=r"'strategy_facts\.cost_s'.*a record field"):
        CellRecord(identity, Status.DONE, Metrics(test_acc=0.5), strategy_facts={"cost_s": 1.0})
    with pytest.raises(RecordError, match=r"'hparams\.fn'.*not JSON"):
        CellRecord.from_row(minimal(hparams={"fn": object()}))


def test_a_bad_record_on_write_or_read_is_one_line_naming_the_field(tmp_path: Path) -> None:
    record = CellRecord.from_row(minimal("k1"))
    with Store.create(tmp_path) as store:
        with pytest.raises(AtlbenchError, match="a cell is stored as a CellRecord"):
            store.put_cell(minimal("k2"))  # type: ignore[arg-type]
        broken = CellRecord.from_row(minimal("k3"))
        object.__setattr__(broken.metrics, "test_acc", "high")  # a producer that went around it
        with pytest.raises(AtlbenchError, match=r"cell k3: field 'test_acc'.*a number"):
            store.put_cell(broken)
        store.put_cell(record)
        store.set_plan([{"key": "k1"}, {"key": "k4"}])
        assert store.statuses() == {"k1": "done"}  # nothing of the refused writes landed
    bad = record.to_json() | {"identity": dict(record.identity.present(), key="k4")}
    bad["metrics"] = {"test_acc": "high"}
    conn = sqlite3.connect(tmp_path / Store.FILENAME)
    sql = "INSERT INTO cells VALUES ('k4', 'done', ?, NULL, NULL, NULL, 0)"
    conn.execute(sql, [json.dumps(bad)])
    conn.commit()
    conn.close()
    with Store(tmp_path) as store, pytest.raises(AtlbenchError, match="cell k4: field 'test_acc'"):
        store.records()


# -- the record's own forms -------------------------------------------------------------------
def test_row_and_json_forms_round_trip() -> None:
    record = CellRecord.from_json(V1_RECORD)
    assert CellRecord.from_row(record.to_row()) == record
    assert CellRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    row = record.to_row()
    assert list(row)[: len(DTYPES)] == list(DTYPES)  # every column, in one order
    assert row["role"] == "transfer" and type(row["role"]) is str
    # tuples and numpy values become JSON when the record is built
    tuned = CellRecord.from_row(minimal(hparams={"grid": (1, 2), "lr": np.float32(0.5)}))
    assert tuned.tuning.hparams == {"grid": [1, 2], "lr": 0.5}


def test_enum_values_are_the_words_the_csvs_carry() -> None:
    assert [r.value for r in Role] == ["transfer", "baseline", "random_init"]
    assert {s.value for s in Status} == {"done", "failed", "skipped"}
    assert Verdict.ABOVE_SCRATCH_SIGNIFICANT == "above scratch training (significant)"
    assert f"{Verdict.NOT_SIGNIFICANT}" == "not significant"


def test_no_verdict_is_spelled_outside_the_record_and_the_report() -> None:
    """Code compares and builds verdicts through the enum; only the report words them."""
    values = {v.value for v in Verdict}
    found = []
    for path in sorted((ROOT / "atlbench").rglob("*.py")):
        rel = path.relative_to(ROOT / "atlbench").as_posix()
        if rel == "record.py" or rel.startswith("report/"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            spelled = isinstance(node, ast.Constant) and node.value in values
            if spelled and id(node) not in docstrings:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert found == []
