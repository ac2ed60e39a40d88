"""``atlbench import TABLE --into RESULTS_DIR``: external transfer results as a results store.

A table of measured transfer (a paper's fine-tuning table, another lab's sweep) becomes a
results directory that ``atlbench recommend``, estimator validation and ``atlbench report``
read like a sweep's. The table is validated here, once, at the edge; the records then go through
the store's own write calls in the order a sweep driver makes them (plan, cells, estimate rows
and the labels that tie them to the plan), into a new directory that appears whole or not at
all.

Columns (CSV, whose leading ``#`` lines are comments, or Parquet):

- ``source``, ``target``: ids; ``test_acc`` (or ``accuracy``, ``value``): the measured
  accuracy, as a fraction or in percent (values above 1 and at most 100 are read as percent, and
  the command says so). A row whose value is blank adds only its scores.
- optional ``budget`` (default ``all``), ``seed`` (default 0), ``strategy`` (default
  ``finetune``): one row per (source, target, budget, seed, strategy).
- estimator scores: a column named after a registered estimator (``logme``, ``leep``, ...) or
  ``score_<name>`` for any other scorer.
- model metadata: ``params`` (parameter count) and ``imagenet_top1``, scored as the static
  baselines ``baseline_params`` and ``baseline_reported_acc``; where the table lacks them, the
  published figures of ``atlbench/data/model_metadata.csv`` fill them for the hub models listed
  there.

Nothing is invented: an imported record carries the accuracy and its keys, not a training time,
device or label count it never had; report sections that need those say so and are left out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlbench._cache import content_hash
from atlbench._published import Table, model_metadata, read_table
from atlbench.errors import AtlbenchError
from atlbench.record import CellRecord, Role
from atlbench.store import Store

VALUE_COLUMNS = ("test_acc", "accuracy", "value")
KEY_DEFAULTS: dict[str, Any] = {"budget": "all", "seed": 0, "strategy": "finetune"}
METADATA = {"params": "baseline_params", "imagenet_top1": "baseline_reported_acc"}
SCORE_PREFIX = "score_"
KEYS = ["source", "target", "budget", "seed", "strategy"]

__all__ = ["Imported", "import_command", "import_table", "parse_table", "write_store"]


@dataclass
class Imported:
    """A validated table: one row per measured cell, one per score, and what was noticed."""

    cells: pd.DataFrame  # source, target, budget, seed, strategy, test_acc
    scores: pd.DataFrame  # source, target, budget, seed, estimator, score
    origin: str
    comments: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    truth: str = "finetune"


def _registered_estimators() -> set[str]:
    import atlbench.estimators  # noqa: F401  (registers the estimators)
    from atlbench.registry import ESTIMATORS

    return set(ESTIMATORS.names())


def _numeric(frame: pd.DataFrame, column: str, origin: str) -> pd.Series:
    """A column as floats; text that is not a number is a one-line error naming the row."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna() & frame[column].astype(str).str.strip().ne("")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise AtlbenchError(
            f"{origin}: column {column!r}, row {row + 1}: {frame[column].iloc[row]!r} is not a "
            "number"
        )
    finite = values.dropna()
    if not np.isfinite(finite.to_numpy(dtype=float)).all():
        raise AtlbenchError(f"{origin}: column {column!r} holds an infinite value")
    return values.astype(float)


def _keys(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """source, target, budget, seed, strategy: present, non-empty, seeds whole numbers."""
    out = pd.DataFrame(index=frame.index)
    for column in ("source", "target"):
        text = frame[column].astype("string").str.strip()
        if text.isna().any() or text.eq("").any():
            row = int(np.flatnonzero((text.isna() | text.eq("")).to_numpy())[0])
            raise AtlbenchError(f"{origin}: row {row + 1} has no {column}")
        out[column] = text.astype(str)
    for column, default in KEY_DEFAULTS.items():
        if column not in frame:
            out[column] = default
            continue
        if column == "seed":
            seed = _numeric(frame, "seed", origin).fillna(default)
            if not np.equal(np.mod(seed, 1), 0).all():
                raise AtlbenchError(f"{origin}: column 'seed' must hold whole numbers")
            out[column] = seed.astype(int)
        else:
            text = frame[column].astype("string").str.strip()
            out[column] = text.mask(text.isna() | text.eq(""), default).astype(str)
    return out


def _value_column(frame: pd.DataFrame, origin: str) -> str:
    present = [c for c in VALUE_COLUMNS if c in frame]
    if len(present) != 1:
        what = "none" if not present else f"several ({', '.join(present)})"
        raise AtlbenchError(
            f"{origin}: needs exactly one accuracy column named {' or '.join(VALUE_COLUMNS)}, "
            f"found {what}; its columns: {', '.join(map(str, frame.columns))}"
        )
    return present[0]


def _metadata(keys: pd.DataFrame, frame: pd.DataFrame, origin: str) -> tuple[pd.DataFrame, str]:
    """Per source: params and imagenet_top1 from the table, else from the shipped metadata.
    Returns (source, column, value) rows and a note on what was filled."""
    sources = sorted(set(keys["source"]))
    rows, filled = [], set()
    shipped = model_metadata().set_index("source")
    for column in METADATA:
        given: dict[Hashable, float] = {}
        if column in frame:
            values = _numeric(frame, column, origin)
            per = pd.DataFrame({"source": keys["source"], "v": values}).dropna()
            spread = per.groupby("source")["v"].nunique()
            if (spread > 1).any():
                raise AtlbenchError(
                    f"{origin}: source {spread.index[spread > 1][0]!r} has several {column} "
                    "values; a model's metadata is one number"
                )
            given = per.groupby("source")["v"].first().to_dict()
        for source in sources:
            if source in given:
                rows.append((source, column, float(given[source])))
            elif source in shipped.index:
                known: Any = shipped.at[source, column]  # a number or NaN: numeric column
                if pd.notna(known):
                    rows.append((source, column, float(known)))
                    filled.add(source)
    note = ""
    if filled:
        note = (
            f"params / imagenet_top1 of {len(filled)} source(s) taken from the published "
            "figures in atlbench/data/model_metadata.csv"
        )
    return pd.DataFrame(rows, columns=["source", "column", "value"]), note


def parse_table(table: Table, truth: str | None = None) -> Imported:
    """Validate a read table into cells and scores (see the module docstring); every problem
    is a one-line :class:`AtlbenchError`."""
    frame, origin = table.frame, table.origin
    frame = frame.rename(columns=lambda c: str(c).strip())
    if frame.empty:
        raise AtlbenchError(f"{origin}: the table has no rows")
    missing = [c for c in ("source", "target") if c not in frame]
    if missing:
        raise AtlbenchError(
            f"{origin}: missing column(s) {', '.join(missing)}; its columns: "
            f"{', '.join(map(str, frame.columns))}"
        )
    value = _value_column(frame, origin)
    keys = _keys(frame, origin)
    acc = _numeric(frame, value, origin)
    notes = []
    measured = acc.dropna()
    if len(measured) and (measured.min() < 0 or measured.max() > 100):
        raise AtlbenchError(
            f"{origin}: column {value!r} must hold accuracies in [0, 1] or in percent; found "
            f"{measured.min():g} .. {measured.max():g}"
        )
    if len(measured) and measured.max() > 1:
        acc = acc / 100.0
        notes.append(f"{value} read as percent (values up to {measured.max():g}): divided by 100")
    cells = keys.assign(test_acc=acc).dropna(subset=["test_acc"])
    dup = cells.duplicated(KEYS, keep=False)
    if dup.any():
        first = cells.loc[dup, KEYS].iloc[0].to_dict()
        raise AtlbenchError(f"{origin}: several rows for the same cell {first}")
    registered = _registered_estimators()
    score_columns = {
        c: (c.removeprefix(SCORE_PREFIX) if c.startswith(SCORE_PREFIX) else c)
        for c in frame.columns
        if (c in registered or (c.startswith(SCORE_PREFIX) and len(c) > len(SCORE_PREFIX)))
    }
    parts = []
    for column, name in score_columns.items():
        score = _numeric(frame, column, origin)
        part = keys.drop(columns="strategy").assign(estimator=name, score=score)
        parts.append(part.dropna(subset=["score"]))
    meta, note = _metadata(keys, frame, origin)
    if note:
        notes.append(note)
    score_keys = pd.concat([cells[KEYS[:4]], *(p[KEYS[:4]] for p in parts)]).drop_duplicates()
    for column, name in METADATA.items():
        values = meta.loc[meta["column"].eq(column)].set_index("source")["value"]
        part = score_keys.assign(estimator=name, score=score_keys["source"].map(values))
        parts.append(part.dropna(subset=["score"]))
    columns = [*KEYS[:4], "estimator", "score"]
    scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    dup = scores.duplicated([*KEYS[:4], "estimator"], keep=False)
    if dup.any():
        first = scores.loc[dup, [*KEYS[:4], "estimator"]].iloc[0].to_dict()
        raise AtlbenchError(f"{origin}: several scores for {first} (one row per cell)")
    known = {"source", "target", value, *KEY_DEFAULTS, *score_columns, *METADATA}
    ignored = [str(c) for c in frame.columns if c not in known]
    if ignored:
        notes.append(
            f"not imported: column(s) {', '.join(ignored)} (scores go in a column named after a "
            f"registered estimator or {SCORE_PREFIX}<name>)"
        )
    if cells.empty:
        raise AtlbenchError(f"{origin}: no row has an accuracy in {value!r}")
    return Imported(
        cells.reset_index(drop=True),
        scores[columns].reset_index(drop=True),
        origin,
        table.comments,
        notes,
        _truth(cells, truth, origin),
    )


def _truth(cells: pd.DataFrame, truth: str | None, origin: str) -> str:
    """The strategy estimators are judged against: the one asked for, finetune, or the only
    strategy of the table."""
    strategies = sorted(set(cells["strategy"]))
    if truth is not None:
        if truth not in strategies:
            raise AtlbenchError(
                f"{origin}: no strategy {truth!r} to judge against; the table has: "
                f"{', '.join(strategies)}"
            )
        return truth
    if "finetune" in strategies:
        return "finetune"
    if len(strategies) == 1:
        return strategies[0]
    raise AtlbenchError(
        f"{origin}: several strategies ({', '.join(strategies)}) and none is 'finetune': name "
        "the one estimators are judged against with --truth"
    )


def _cell_key(row: dict[Hashable, Any]) -> str:
    return content_hash(["import", *(row[k] for k in KEYS)])


def _source_key(source: str) -> str:
    return content_hash({"kind": "imported", "id": source})


def _estimate_key(target: str, budget: str, seed: int) -> str:
    return content_hash(["import-estimates", target, budget, int(seed)])


def _records(imported: Imported) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Plan cells and their records: the keys and the accuracy, nothing the table lacks."""
    plan, records = [], []
    for row in imported.cells.to_dict("records"):
        cell = {
            "key": _cell_key(row),
            "source": row["source"],
            "source_id": row["source"],
            "target": row["target"],
            "strategy": row["strategy"],
            "strategy_name": row["strategy"],
            "role": Role.TRANSFER,
            "budget": str(row["budget"]),
            "seed": int(row["seed"]),
        }
        plan.append(cell)
        records.append(
            cell | {"status": "done", "test_acc": float(row["test_acc"]), "imported": True}
        )
    return plan, records


def _estimate_rows(imported: Imported) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, labels = [], {}
    for r in imported.scores.to_dict("records"):
        key = _estimate_key(r["target"], str(r["budget"]), int(r["seed"]))
        labels[key] = {"target": r["target"], "budget": str(r["budget"]), "seed": int(r["seed"])}
        rows.append(
            {
                "key": key,
                "estimator": r["estimator"],
                "source_key": _source_key(r["source"]),
                "source": r["source"],
                "target": r["target"],
                "budget": str(r["budget"]),
                "seed": int(r["seed"]),
                "status": "done",
                "score": float(r["score"]),
                "extra": {"imported": True},
            }
        )
    return rows, labels


def _suite_meta(imported: Imported, name: str) -> dict[str, Any]:
    cells = imported.cells
    return {
        "name": name,
        "description": (
            f"Imported from {imported.origin}: {len(cells)} results of "
            f"{cells['source'].nunique()} sources on {cells['target'].nunique()} targets."
        ),
        "truth": imported.truth,
        "seeds": sorted({int(s) for s in cells["seed"]}),
        "imported": {"origin": imported.origin, "citation": list(imported.comments)},
    }


def write_store(imported: Imported, into: Path) -> None:
    """Write ``imported`` as a new results store at ``into``: built in a sibling directory with
    the store's own writes, then renamed into place, so a crash leaves nothing half-written."""
    into = Path(into)
    if (into / Store.FILENAME).exists():
        raise AtlbenchError(f"{into}: already holds a results store; import into a new directory")
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise AtlbenchError(f"{into}: exists and is not an empty directory")
    into.parent.mkdir(parents=True, exist_ok=True)
    staging = into.parent / f".{into.name}.import-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    plan, records = _records(imported)
    rows, labels = _estimate_rows(imported)
    try:
        with Store.create(staging) as store:
            store.set_plan(plan)
            store.set_meta("suite", _suite_meta(imported, into.name))
            store.set_meta("estimate_labels", labels)
            store.set_meta("source_keys", {_source_key(s): s for s in imported.cells["source"]})
            for record in records:
                store.put_cell(CellRecord.from_row(record))
            if rows:
                store.put_estimates(rows)
        if into.exists():
            into.rmdir()
        os.replace(staging, into)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def import_table(table: str | Path, into: Path, truth: str | None = None) -> Imported:
    """Read, validate and write ``table`` as a results store at ``into``."""
    imported = parse_table(read_table(table), truth)
    write_store(imported, Path(into))
    return imported


def import_command(
    table: str, into: Path, truth: str | None = None, echo: Callable[[str], None] = print
) -> Imported:
    """The CLI: import, then say what was written and what was noticed."""
    imported = import_table(table, into, truth)
    for note in imported.notes:
        echo(note)
    cells, scores = imported.cells, imported.scores
    names = sorted(set(scores["estimator"]))
    seeds = cells["seed"].nunique()
    echo(
        f"imported {len(cells)} results ({cells['source'].nunique()} sources x "
        f"{cells['target'].nunique()} targets, {cells['budget'].nunique()} budget(s), "
        f"{seeds} seed(s)) and {len(scores)} scores ({', '.join(names) or 'none'}) into {into}; "
        f"estimators are judged against {imported.truth}"
    )
    echo(f"next: atlbench report {into}   |   atlbench recommend {into} --target NEW_TARGET")
    return imported
