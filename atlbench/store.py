"""The result store: one SQLite file (WAL) per results directory, written only by the driver.

Every write is one transaction, so a crash at any moment leaves the store consistent; a cell is
either recorded whole or not at all, and a re-run skips what is done.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from atlbench.errors import AtlbenchError
from atlbench.record import DTYPES, CellRecord, RecordError

__all__ = ["Store", "SweepLock", "export_records"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    predictions TEXT,
    error TEXT,
    traceback TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS plan (
    key TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    cell TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS estimates_v2 (
    key TEXT NOT NULL,
    estimator TEXT NOT NULL,
    source_key TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    budget TEXT NOT NULL,
    seed INTEGER,
    status TEXT NOT NULL,
    score REAL,
    time_s REAL,
    extra TEXT,
    error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (key, estimator, source_key)
);
CREATE TABLE IF NOT EXISTS artifacts (
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (key, kind)
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


class SweepLock:
    """An exclusive advisory lock: one sweep per results directory, never interleaved writes."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".sweep.lock"
        self._fd: int | None = None

    def __enter__(self) -> SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text().strip() or "another process"
            raise AtlbenchError(
                f"{self.path.parent}: another sweep ({holder}) is writing here; wait for it or use "
                "a different --results-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Store:
    """Records by cell key. ``Store(dir)`` opens an existing store read-only (a typo in the path is
    a one-line error, never a new empty store); :meth:`create` opens or creates it for the sweep
    driver, the only writer."""

    FILENAME = "atlbench.sqlite"

    def __init__(self, directory: str | Path, writable: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILENAME
        self.writable = writable
        if writable:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(SCHEMA)
            self._migrate_records()
            return
        if not self.path.is_file():
            raise AtlbenchError(
                f"{self.directory}: no results store here (run `atlbench sweep` first)"
            )
        uri = f"file:{self.path.resolve()}?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError:
            self.conn.close()
            raise AtlbenchError(f"{self.path}: not an atlbench results store") from None
        if "estimates_v2" not in tables:
            self.conn.close()
            raise AtlbenchError(
                f"{self.path}: written by an older atlbench; re-run the sweep into a new "
                "--results-dir"
            )

    @classmethod
    def create(cls, directory: str | Path) -> Store:
        """Open for writing, creating the directory and database if needed (the driver only)."""
        return cls(directory, writable=True)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes (driver only) ------------------------------------------------------------
    def _tx(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(sql, rows)

    def put_cell(self, record: CellRecord, predictions: Any = None) -> None:
        """Insert or replace one cell's record atomically; ``predictions`` is the runner's
        ``{"pred": [...], "true": [...]}`` (a bare list of predictions is accepted too).

        What is written is checked to read back as the same record, so a bad field fails here,
        named, and never reaches the file."""
        if not isinstance(record, CellRecord):
            raise AtlbenchError(
                f"{self.path}: a cell is stored as a CellRecord, got {type(record).__name__} "
                "(CellRecord.from_row builds one from a flat dict)"
            )
        payload = record.to_json()
        self._decode(record.key, payload)  # the write is validated as the read will be
        self._tx(
            "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    record.key,
                    record.status.value,
                    json.dumps(payload, default=_json_default),
                    json.dumps(predictions) if predictions is not None else None,
                    record.error,
                    record.traceback,
                    time.time(),
                )
            ],
        )

    def _decode(self, key: str, payload: Any) -> CellRecord:
        """A stored record as a :class:`CellRecord` (schema 1 migrated), or a one-line error
        naming the cell and the field."""
        try:
            if not isinstance(payload, dict):
                raise RecordError("record", f"expected a JSON object, got {payload!r}")
            return CellRecord.from_json(payload)
        except RecordError as err:
            raise AtlbenchError(f"{self.path}: the record of cell {key}: {err}") from None

    def _migrate_records(self) -> None:
        """Rewrite records of an older schema (atlbench 0.2's flat dicts) in today's form, in
        one transaction; a record that does not migrate stops the open, named."""
        rows = self.conn.execute("SELECT key, record FROM cells").fetchall()
        old = [(k, obj) for k, r in rows if "schema_version" not in (obj := json.loads(r))]
        if not old:
            return
        updates = [
            (json.dumps(self._decode(k, r).to_json(), default=_json_default), k) for k, r in old
        ]
        self._tx("UPDATE cells SET record = ? WHERE key = ?", updates)

    def put_estimates(self, rows: list[dict[str, Any]]) -> None:
        self._tx(
            "INSERT OR REPLACE INTO estimates_v2 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r["key"],
                    r["estimator"],
                    r.get("source_key", r["source"]),
                    r["source"],
                    r["target"],
                    r.get("budget", "all"),
                    r.get("seed"),
                    r["status"],
                    r.get("score"),
                    r.get("time_s"),
                    json.dumps(r.get("extra", {}), default=_json_default),
                    r.get("error"),
                    time.time(),
                )
                for r in rows
            ],
        )

    def put_artifact(self, key: str, kind: str, payload: dict[str, Any]) -> None:
        self._tx(
            "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)",
            [(key, kind, json.dumps(payload, default=_json_default), time.time())],
        )

    def set_plan(self, cells: list[dict[str, Any]]) -> None:
        """Replace the current plan (what this results directory's views are about)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM plan")
            self.conn.executemany(
                "INSERT INTO plan VALUES (?, ?, ?)",
                [(c["key"], i, json.dumps(c)) for i, c in enumerate(cells)],
            )

    def set_meta(self, key: str, value: Any) -> None:
        self._tx("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(key, json.dumps(value))])

    # -- reads ---------------------------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, status FROM cells").fetchall())

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def estimate_keys(self) -> set[tuple[str, str]]:
        """(task key, estimator) pairs with a finished row (done, or skipped for a reason)."""
        rows = self.conn.execute(
            "SELECT key, estimator FROM estimates_v2 WHERE status IN ('done', 'skipped')"
        )
        return set(rows.fetchall())

    def cells(self, plan_only: bool = True) -> list[CellRecord]:
        """Every cell record, checked (by default those of the current plan, in plan order,
        labelled with the ids the current suite gives them)."""
        sql = "SELECT c.key, c.record FROM cells c"
        if plan_only:
            sql += " JOIN plan p ON p.key = c.key ORDER BY p.position"
        out = [self._decode(key, json.loads(raw)) for key, raw in self.conn.execute(sql)]
        if plan_only:
            labels = {}
            for (raw,) in self.conn.execute("SELECT cell FROM plan"):
                cell = json.loads(raw)
                labels[cell["key"]] = cell
            for i, record in enumerate(out):
                try:
                    out[i] = record.relabel(labels[record.key])
                except RecordError as err:
                    raise AtlbenchError(f"{self.path}: plan cell {record.key}: {err}") from None
        return out

    def records(self, plan_only: bool = True) -> pd.DataFrame:
        """All cell records as one row each (:meth:`CellRecord.to_row`; by default only the
        current plan), each record column with its dtype from :data:`atlbench.record.DTYPES`.

        A field no record holds (an imported table's training facts, the error of a sweep
        without failures) has no column, as views that leave out what was not measured expect;
        strategy facts keep the dtype pandas infers.
        """
        rows = [record.to_row() for record in self.cells(plan_only)]
        if not rows:
            return pd.DataFrame(columns=list(DTYPES)).astype(DTYPES)
        held = {c for row in rows for c, v in row.items() if v is not None}
        frame = pd.DataFrame(rows)
        frame = frame.drop(columns=[c for c in DTYPES if c not in held])
        return frame.astype({c: t for c, t in DTYPES.items() if c in frame.columns})

    def predictions(self, key: str) -> list[int] | None:
        """A cell's test predictions, in test-split order."""
        payload = self._predictions(key)
        if payload is None:
            return None
        pred: list[int] = payload["pred"] if isinstance(payload, dict) else payload
        return pred

    def _predictions(self, key: str) -> Any:
        row = self.conn.execute("SELECT predictions FROM cells WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def correctness(self) -> dict[str, Any]:
        """Per finished cell of the plan: a boolean array, one entry per test example."""
        import numpy as np

        out = {}
        sql = (
            "SELECT c.key, c.predictions FROM cells c JOIN plan p ON p.key = c.key "
            "WHERE c.status = 'done' AND c.predictions IS NOT NULL"
        )
        for key, raw in self.conn.execute(sql):
            payload = json.loads(raw)
            if isinstance(payload, dict) and "true" in payload:
                out[key] = np.asarray(payload["pred"]) == np.asarray(payload["true"])
        return out

    def estimates(self) -> pd.DataFrame:
        frame = pd.read_sql_query(
            "SELECT key, estimator, source_key, source, target, budget, seed, status, score, "
            "time_s, extra, error FROM estimates_v2",
            self.conn,
        )
        frame["extra"] = [json.loads(e) if e else {} for e in frame["extra"]]
        return frame

    def artifacts(self, kind: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT payload FROM artifacts WHERE kind = ?", (kind,))
        return [json.loads(r[0]) for r in rows]


def export_records(store: Store, path: Path, predictions: bool = False) -> int:
    """Write every record of the current plan as one flat table; the suffix picks the format.

    ``.parquet`` keeps lists of numbers (e.g. test predictions) as list columns; ``.csv`` writes
    them as JSON. Nested values (hparams, grid, versions) become JSON strings in both, so the
    file reads back with plain ``pandas.read_parquet`` / ``read_csv``. Returns the row count.
    """
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise AtlbenchError(f"{path}: export to a .parquet or .csv file")
    frame = store.records()
    if predictions and not frame.empty:
        preds = [store.predictions(k) for k in frame["key"]]
        frame["test_pred"] = pd.Series(preds, index=frame.index, dtype=object)
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, (dict, list, tuple))).any():
            frame[column] = frame[column].map(lambda v: _flat_value(v, suffix))
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return len(frame)


def _flat_value(value: Any, suffix: str) -> Any:
    numbers = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if suffix == ".parquet" and numbers:
        return list(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    return value


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
