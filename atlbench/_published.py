"""Published transfer results shipped with atlbench, and the reader for result tables.

``atlbench/data`` holds fine-tuning tables from papers (``finetune_*.csv``; each file's leading
``#`` lines cite the paper, table and repository it was transcribed from) and
``model_metadata.csv``, published parameter counts and ImageNet top-1 of hub models. A table of
measured accuracies is a fact: these let ``recommend`` and every estimator be checked on results
nobody here produced (``atlbench import sfda-supervised --into results/sfda``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from atlbench.errors import AtlbenchError

DATA_DIR = Path(__file__).resolve().parent / "data"
TABLE_PREFIX = "finetune_"
METADATA_FILE = "model_metadata.csv"

__all__ = ["DATA_DIR", "Table", "model_metadata", "read_table", "shipped_tables"]


@dataclass(frozen=True)
class Table:
    """A results table as read: its rows, where it came from, and its leading comment lines
    (the citation, for a shipped table)."""

    frame: pd.DataFrame
    origin: str
    comments: tuple[str, ...]


def shipped_tables() -> dict[str, Path]:
    """Shipped tables by short name: ``finetune_sfda_supervised.csv`` is ``sfda-supervised``."""
    return {
        p.stem.removeprefix(TABLE_PREFIX).replace("_", "-"): p
        for p in sorted(DATA_DIR.glob(f"{TABLE_PREFIX}*.csv"))
    }


def _leading_comments(path: Path) -> list[str]:
    lines = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            lines.append(line[1:].rstrip("\n").strip())
    return lines


def read_table(table: str | Path) -> Table:
    """Read a CSV (leading ``#`` lines are comments) or Parquet table, or a shipped table by
    name; a missing file or an unreadable one is a one-line error."""
    path = Path(table)
    shipped = shipped_tables()
    if not path.is_file():
        if str(table) in shipped:
            path = shipped[str(table)]
        else:
            names = ", ".join(shipped) or "none"
            raise AtlbenchError(
                f"{table}: no such file, nor a table shipped with atlbench (shipped: {names})"
            )
    suffix = path.suffix.lower()
    origin = str(path)
    if path.resolve().parent == DATA_DIR:
        origin = f"atlbench/data/{path.name}"
    try:
        if suffix == ".parquet":
            return Table(pd.read_parquet(path), origin, ())
        if suffix in (".csv", ".txt"):
            comments = _leading_comments(path)
            frame = pd.read_csv(path, skiprows=len(comments), skipinitialspace=True)
            return Table(frame, origin, tuple(comments))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AtlbenchError(f"{path}: cannot read it as a {suffix[1:]} table: {first}") from None
    raise AtlbenchError(f"{path}: import reads .csv or .parquet tables, not {suffix or 'this'}")


def model_metadata() -> pd.DataFrame:
    """Published facts per hub model (columns: source, params, imagenet_top1, weights), from
    ``atlbench/data/model_metadata.csv``; its header says where each figure comes from."""
    return read_table(DATA_DIR / METADATA_FILE).frame
