"""The result store: records survive reopening, statuses drive resume, one sweep per directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlbench.errors import AtlbenchError
from atlbench.record import CellRecord
from atlbench.store import Store, SweepLock


def row(key: str, status: str = "done", acc: float = 0.5) -> dict:
    return {
        "key": key,
        "status": status,
        "test_acc": acc,
        "source": "s",
        "target": "t",
        "strategy": "linear_probe",
        "budget": "5/class",
        "seed": 0,
    }


def record(key: str, status: str = "done", acc: float = 0.5) -> CellRecord:
    return CellRecord.from_row(row(key, status, acc))


def test_records_round_trip_and_replace(tmp_path: Path) -> None:
    with Store.create(tmp_path) as store:
        store.set_plan([{"key": "k1", "source": "s", "target": "t"}, {"key": "k2", "source": "s2"}])
        store.put_cell(record("k1"), [0, 1, 1])
        store.put_cell(record("k2", "failed"), None)
        store.put_cell(record("k2", "done", 0.75), [1])  # a retried cell replaces its record
    with Store(tmp_path) as store:
        assert store.statuses() == {"k1": "done", "k2": "done"}
        frame = store.records()
        assert frame.set_index("key").loc["k2", "test_acc"] == 0.75
        assert frame.set_index("key").loc["k2", "source"] == "s2"  # labels from the current plan
        assert store.predictions("k1") == [0, 1, 1]


def test_estimates_and_artifacts(tmp_path: Path) -> None:
    with Store.create(tmp_path) as store:
        store.put_estimates(
            [
                {
                    "key": "e",
                    "estimator": "logme",
                    "source": "s",
                    "target": "t",
                    "status": "done",
                    "score": 1.5,
                    "time_s": 0.1,
                },
                {
                    "key": "e",
                    "estimator": "leep",
                    "source": "s",
                    "target": "t",
                    "status": "failed",
                    "error": "ValueError: x",
                },
            ]
        )
        store.put_artifact("a1", "cka", {"matrix": [[1.0]]})
        assert store.estimate_keys() == {("e", "logme")}
        assert store.artifacts("cka") == [{"matrix": [[1.0]]}]
        est = store.estimates()
        assert est.set_index("estimator").loc["logme", "score"] == 1.5


def test_opening_a_missing_store_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    from atlbench.report._views import Views

    typo = tmp_path / "results" / "quickstrat"
    with pytest.raises(AtlbenchError, match=r"quickstrat: no results store here"):
        Views.from_store(Store(typo))
    assert not typo.exists() and not (tmp_path / "results").exists()
    with Store.create(tmp_path / "ok") as store:
        store.put_cell(record("k1"))
    with Store(tmp_path / "ok") as reader:  # read-only: it reads, and refuses to write
        assert reader.statuses() == {"k1": "done"}
        with pytest.raises(Exception, match="readonly"):
            reader.put_cell(record("k2"))


def test_second_sweep_on_same_directory_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from atlbench.store import SweepLock\n"
            f"with SweepLock(Path({str(tmp_path)!r})):\n"
            "    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(AtlbenchError, match=r"another sweep .* is writing here"),
            SweepLock(tmp_path),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with SweepLock(tmp_path):  # released when the holder dies, even by SIGKILL
        pass


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_is_one_flat_table_that_reads_back(tmp_path: Path, suffix: str) -> None:
    import json

    import pandas as pd

    from atlbench.store import export_records

    with Store.create(tmp_path / "r") as store:
        store.set_plan([{"key": "k1"}, {"key": "k2"}])
        nested = row("k1") | {"hparams": {"lr": 0.003, "layers": "all"}, "grid": [{"lr": 1}]}
        store.put_cell(CellRecord.from_row(nested), [2, 0, 1])  # "grid": a strategy's own fact
        store.put_cell(record("k2", acc=0.75), [1, 1, 0])
        out = tmp_path / f"all{suffix}"
        assert export_records(store, out, predictions=True) == 2
        with pytest.raises(AtlbenchError, match=r"\.parquet or \.csv"):
            export_records(store, tmp_path / "all.xlsx")
    back = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(back["key"]) == ["k1", "k2"] and list(back["test_acc"]) == [0.5, 0.75]
    assert json.loads(back.loc[0, "hparams"]) == {"layers": "all", "lr": 0.003}
    assert json.loads(back.loc[0, "grid"]) == [{"lr": 1}]
    preds = back["test_pred"].map(json.loads if suffix == ".csv" else list)
    assert list(preds) == [[2, 0, 1], [1, 1, 0]]
