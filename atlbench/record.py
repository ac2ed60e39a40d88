"""The record of one cell: typed groups, enums for role, status and verdict, a schema version.

A leaf module (the standard library only), so the runner, the executors, the store and the
analysis share one definition without an import cycle. A :class:`CellRecord` checks and
normalises every field when it is built, so a producer's mistake fails where it is made, naming
the field; the store writes :meth:`CellRecord.to_json` and reads it back through
:meth:`CellRecord.from_json`, which also migrates the flat records of schema 1.

The views read records as one flat row per cell (:meth:`CellRecord.to_row`); :data:`DTYPES` gives
each column its pandas dtype, so a reader never re-parses a column. What a plug-in strategy adds
lives in ``strategy_facts`` and becomes columns of its own name.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, enum.Enum):
        """``enum.StrEnum`` of Python 3.11: members are their string values."""

        def __str__(self) -> str:
            return str(self.value)


SCHEMA_VERSION = 2
"""1: the flat dict of atlbench 0.2 with strategy extras as ``extra_*`` keys; 2: typed groups."""

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"


class Role(StrEnum):
    """What a cell is for: how the comparisons pair it (see :mod:`atlbench.plan`)."""

    TRANSFER = "transfer"  # adapts a pre-trained source
    BASELINE = "baseline"  # the from-scratch baseline of the source's architecture
    RANDOM_INIT = "random_init"  # a frozen strategy on a randomly initialised encoder


class Status(StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # estimator rows only: nothing to score (e.g. no classifier head)


class Verdict(StrEnum):
    """The outcome of a paired comparison (:mod:`atlbench.analysis._gains`); the report words it.

    The values are the words the CSVs have always carried.
    """

    POSITIVE_SIGNIFICANT = "positive (significant)"
    POSITIVE_NOMINAL = "positive (nominal)"
    NEGATIVE_SIGNIFICANT = "negative (significant)"
    NEGATIVE_NOMINAL = "negative (nominal)"
    ABOVE_SCRATCH_SIGNIFICANT = "above scratch training (significant)"
    ABOVE_SCRATCH_NOMINAL = "above scratch training (nominal)"
    BELOW_SCRATCH_SIGNIFICANT = "below scratch training (significant)"
    BELOW_SCRATCH_NOMINAL = "below scratch training (nominal)"
    NOT_SIGNIFICANT = "not significant"
    EQUIVALENT = "equivalent"
    UNDETERMINED = "undetermined"
    TOO_FEW_SEEDS = "too few seeds"
    NO_BASELINE = "no baseline"
    NO_SCRATCH_RUN = "no scratch run"


class RecordError(ValueError):
    """A record field with a value of the wrong kind; ``field`` names it (dotted when nested)."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"field {field_name!r}: {problem}")
        self.field = field_name


# -- field kinds: how a value is checked and normalised -------------------------------------------
Coerce = Callable[[object, str], Any]


def _is_missing(value: object) -> bool:
    """None, or pandas' NA (not imported: this module is a leaf)."""
    return value is None or type(value).__name__ == "NAType"


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise RecordError(path, f"expected a string, got {value!r}")
    return str.__str__(value)  # a plain str, also for an enum member


def _int(value: object, path: str) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():  # a count read back from a float column
        return int(value)
    raise RecordError(path, f"expected an integer, got {value!r}")


def _float(value: object, path: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise RecordError(path, f"expected a number, got {value!r}")


def _bool(value: object, path: str) -> bool:
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's bool too
        return bool(value)
    raise RecordError(path, f"expected true or false, got {value!r}")


def _json(value: object, path: str) -> JSON:
    """A JSON value: tuples become lists, numpy scalars and arrays plain numbers and lists."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return _json_dict(value, path)
    if isinstance(value, list | tuple):
        return [_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # a numpy array
    if callable(tolist):
        return _json(tolist(), path)
    raise RecordError(path, f"{type(value).__name__} is not JSON")


def _json_dict(value: object, path: str) -> dict[str, JSON]:
    if not isinstance(value, Mapping):
        raise RecordError(path, f"expected a mapping, got {value!r}")
    out: dict[str, JSON] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise RecordError(path, f"key {k!r} is not a string")
        out[str.__str__(k)] = _json(v, f"{path}.{k}")
    return out


def _list_of(item: Coerce) -> Coerce:
    def check(value: object, path: str) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise RecordError(path, f"expected a list, got {value!r}")
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return check


def _str_dict(value: object, path: str) -> dict[str, str]:
    return {k: _str(v, f"{path}.{k}") for k, v in _json_dict(value, path).items()}


def _enum(kind: type[StrEnum]) -> Coerce:
    def check(value: object, path: str) -> StrEnum:
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return kind(value)
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            raise RecordError(path, f"{value!r} is not one of {allowed}") from None

    return check


# annotation text -> (check, pandas dtype when required, pandas dtype when optional)
_KINDS: dict[str, tuple[Coerce, str, str]] = {
    "str": (_str, "str", "str"),
    "int": (_int, "int64", "Int64"),
    "float": (_float, "float64", "float64"),
    "bool": (_bool, "bool", "boolean"),
    "Role": (_enum(Role), "str", "str"),
    "Status": (_enum(Status), "str", "str"),
    "list[str]": (_list_of(_str), "object", "object"),
    "list[float]": (_list_of(_float), "object", "object"),
    "dict[str, str]": (_str_dict, "object", "object"),
    "dict[str, JSON]": (_json_dict, "object", "object"),
    "list[dict[str, JSON]]": (_list_of(_json_dict), "object", "object"),
}


@dataclass(frozen=True)
class _Field:
    name: str
    coerce: Coerce
    optional: bool
    required: bool  # no default: a record without it is invalid
    dtype: str

    def check(self, value: object, path: str | None = None) -> Any:
        path = path or self.name
        missing = _is_missing(value) or (
            # a float NaN is a value for a float column, and "absent" anywhere else (a frame cell)
            isinstance(value, float) and math.isnan(value) and self.coerce is not _float
        )
        if missing:
            if not self.optional:
                raise RecordError(path, "missing")
            return None
        return self.coerce(value, path)


_FIELDS: dict[type, tuple[_Field, ...]] = {}


def _fields(cls: type) -> tuple[_Field, ...]:
    """The checked fields of a record group, from its annotations (``X | None`` is optional)."""
    if cls in _FIELDS:
        return _FIELDS[cls]
    out = []
    for f in dataclasses.fields(cls):
        text = str(f.type)
        parts = [p.strip() for p in text.split(" | ")]
        optional = "None" in parts
        kind = " | ".join(p for p in parts if p != "None")
        if kind not in _KINDS:
            raise TypeError(f"{cls.__name__}.{f.name}: no record kind for {text!r}")
        coerce, dtype, dtype_optional = _KINDS[kind]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append(
            _Field(f.name, coerce, optional, required, dtype_optional if optional else dtype)
        )
    _FIELDS[cls] = tuple(out)
    return _FIELDS[cls]


@dataclass(frozen=True)
class _Group:
    """A typed group of record fields, checked and normalised when built."""

    def __post_init__(self) -> None:
        for f in _fields(type(self)):
            object.__setattr__(self, f.name, f.check(getattr(self, f.name)))

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str) -> Any:
        """Build from a mapping of exactly this group's fields (the stored form)."""
        known = {f.name: f for f in _fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RecordError(f"{path}.{unknown[0]}", "not a field of this record")
        for f in known.values():
            if f.required and _is_missing(data.get(f.name)):
                raise RecordError(f.name, "missing")
        return cls(**data)

    def present(self) -> dict[str, JSON]:
        """The fields that hold a value (the stored form leaves out the rest)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


# -- the groups -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity(_Group):
    """Which cell: the key and the labels of the current plan (the store relabels them)."""

    key: str
    source: str  # the source id, or "<arch> (random init)" for baseline and twin cells
    target: str
    strategy: str  # the strategy's suite label
    budget: str
    seed: int
    source_id: str | None = None
    strategy_name: str | None = None
    role: Role = Role.TRANSFER
    budget_kind: str | None = None
    budget_value: float | None = None
    arch: str | None = None
    trains_encoder: bool | None = None  # a capability of the strategy, as run in this cell


@dataclass(frozen=True)
class Metrics(_Group):
    """What the runner measured on the test split, and the selection score."""

    test_acc: float | None = None
    test_macro_f1: float | None = None
    val_acc: float | None = None
    n_test: int | None = None
    num_classes: int | None = None


@dataclass(frozen=True)
class SelectionSummary(_Group):
    """How hyperparameters were selected: protocol, method and how many labels fit/validate."""

    validation: str | None = None  # "budgeted" or "full"
    selection: str | None = None  # "hold-out", "5-fold CV", "validation split"
    n_train: int | None = None  # labels in the budget
    n_fit: int | None = None
    n_val: int | None = None


@dataclass(frozen=True)
class Cost(_Group):
    """Clocks, throughput, memory and size. ``cost_s`` is the one cost every analysis uses
    (every trial, the retrain, feature extraction); the strategy fills its own clock, the runner
    the rest."""

    cost_s: float | None = None
    wall_time_s: float | None = None
    feature_time_s: float | None = None
    train_time_s: float | None = None  # the final (selected or retrained) run
    data_wait_s: float | None = None  # of train_time_s: waiting for batches
    compute_time_s: float | None = None
    selection_time_s: float | None = None  # every trial of the search
    time_to_best_s: float | None = None
    time_to_90pct_s: float | None = None
    train_samples_per_s: float | None = None
    eval_samples_per_s: float | None = None
    warmup_time_s: float | None = None
    compile_time_s: float | None = None
    peak_mem_mb: float | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    prefix_cache: str | None = None  # whether a frozen prefix was cached, and why (not)


@dataclass(frozen=True)
class Tuning(_Group):
    """The chosen values, every trial, and how the search ran (:mod:`atlbench.tuning`)."""

    hparams: dict[str, JSON] | None = None
    trials: list[dict[str, JSON]] | None = None  # every configuration tried (a frozen grid too)
    n_trials: int | None = None  # tuning trials (0 for a frozen strategy's grid)
    edge_flags: list[str] | None = None  # chosen values on the edge of the space, and the like
    search: dict[str, JSON] | None = None
    schedule: str | None = None
    epochs: int | None = None  # epochs of the final run
    best_epoch: int | None = None  # 1-based, of the selected trial
    retrain_epochs: int | None = None
    micro_batch: int | None = None
    oom_retries: int | None = None


@dataclass(frozen=True)
class Diagnostics(_Group):
    """Why a result is what it is: overfitting and forgetting."""

    train_val_gap: float | None = None  # train-batch minus validation accuracy, selected epoch
    val_curve: list[float] | None = None
    train_curve: list[float] | None = None
    source_acc_before: float | None = None
    source_acc_after: float | None = None
    forgetting: float | None = None  # before minus after


@dataclass(frozen=True)
class Artifacts(_Group):
    checkpoint: str | None = None  # the fine-tuned encoder (safetensors), when kept


@dataclass(frozen=True)
class Provenance(_Group):
    suite: str | None = None
    device: str | None = None
    dtype: str | None = None
    versions: dict[str, str] | None = None
    created_at: float | None = None
    imported: bool = False  # read from a published table (``atlbench import``), not run


GROUPS: dict[str, type[_Group]] = {
    "identity": Identity,
    "metrics": Metrics,
    "selection": SelectionSummary,
    "cost": Cost,
    "tuning": Tuning,
    "diagnostics": Diagnostics,
    "artifacts": Artifacts,
    "provenance": Provenance,
}

RENAMED_V1 = {
    "extra_search": "search",
    "extra_schedule": "schedule",
    "extra_retrain_epochs": "retrain_epochs",
    "extra_micro_batch": "micro_batch",
    "extra_oom_retries": "oom_retries",
    "extra_val_curve": "val_curve",
    "extra_train_curve": "train_curve",
    "extra_train_val_gap": "train_val_gap",
    "extra_checkpoint": "checkpoint",
    "extra_prefix_cache": "prefix_cache",
}
"""Columns of schema 1 that are typed fields now; any other ``extra_X`` is strategy fact X."""
DROPPED_V1 = frozenset({"extra_n_trials"})  # the same number as ``n_trials``
_TOP = ("status", "error", "traceback")  # columns of the record itself, not of a group


@dataclass(frozen=True)
class CellRecord:
    """One cell's result. Build it with typed groups; read it flat with :meth:`to_row`.

    Invariants checked when built: every field has its declared kind, a finished cell has a
    test accuracy, and no strategy fact shadows a field.
    """

    identity: Identity
    status: Status
    metrics: Metrics = field(default_factory=Metrics)
    selection: SelectionSummary = field(default_factory=SelectionSummary)
    cost: Cost = field(default_factory=Cost)
    tuning: Tuning = field(default_factory=Tuning)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    artifacts: Artifacts = field(default_factory=Artifacts)
    provenance: Provenance = field(default_factory=Provenance)
    error: str | None = None  # first line of the exception, for a failed cell
    traceback: str | None = None
    strategy_facts: dict[str, JSON] = field(default_factory=dict)  # a plug-in strategy's own
    schema_version: int = SCHEMA_VERSION

    COLUMNS: ClassVar[dict[str, str | None]]  # flat column -> its group (None: the record's own)

    def __post_init__(self) -> None:
        for name, kind in GROUPS.items():
            if not isinstance(getattr(self, name), kind):
                raise RecordError(name, f"expected {kind.__name__}, got {getattr(self, name)!r}")
        object.__setattr__(self, "status", _enum(Status)(self.status, "status"))
        for name in ("error", "traceback"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else _str(value, name))
        facts = _json_dict(self.strategy_facts, "strategy_facts")
        shadowed = sorted(set(facts) & set(self.COLUMNS))
        if shadowed:
            raise RecordError(f"strategy_facts.{shadowed[0]}", "has the name of a record field")
        object.__setattr__(self, "strategy_facts", facts)
        if self.schema_version != SCHEMA_VERSION:
            raise RecordError("schema_version", f"{self.schema_version} is not {SCHEMA_VERSION}")
        if self.status == Status.DONE and self.metrics.test_acc is None:
            raise RecordError("test_acc", "missing for a finished cell")

    @property
    def key(self) -> str:
        return self.identity.key

    # -- flat rows (the views) --------------------------------------------------------------------
    def to_row(self) -> dict[str, JSON]:
        """Every column, ``None`` where not recorded, then the strategy facts by their names."""
        row: dict[str, JSON] = {}
        for name in GROUPS:
            row |= dataclasses.asdict(getattr(self, name))
        row |= {"status": self.status.value, "error": self.error, "traceback": self.traceback}
        row["role"] = self.identity.role.value
        return row | self.strategy_facts

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> CellRecord:
        """From a flat row (:meth:`to_row`, a frame row, an importer's dict): known columns fill
        their groups, every other key is a strategy fact."""
        parts: dict[str, dict[str, object]] = {name: {} for name in GROUPS}
        top: dict[str, object] = {}
        facts: dict[str, object] = {}
        for column, value in row.items():
            if column == "schema_version":
                continue
            if column not in cls.COLUMNS:
                if not _is_missing(value):
                    facts[column] = value
                continue
            group = cls.COLUMNS[column]
            (top if group is None else parts[group])[column] = value
        if "status" not in top:
            raise RecordError("status", "missing")
        groups = {name: GROUPS[name].from_mapping(parts[name], name) for name in GROUPS}
        return cls(**groups, **top, strategy_facts=facts)  # type: ignore[arg-type]

    # -- the stored form --------------------------------------------------------------------------
    def to_json(self) -> dict[str, JSON]:
        """Nested by group, fields without a value left out, with the schema version."""
        out: dict[str, JSON] = {"schema_version": self.schema_version, "status": self.status.value}
        for name in GROUPS:
            out[name] = getattr(self, name).present()
        for name in ("error", "traceback"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.strategy_facts:
            out["strategy_facts"] = dict(self.strategy_facts)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> CellRecord:
        """From :meth:`to_json`'s form, or a schema-1 flat record (migrated)."""
        if "schema_version" not in data:
            return cls.from_row(migrate_v1(data))
        version = data["schema_version"]
        if version != SCHEMA_VERSION:
            raise RecordError(
                "schema_version", f"{version!r}: this atlbench reads {SCHEMA_VERSION} (and 1)"
            )
        unknown = sorted(set(data) - {*GROUPS, *_TOP, "schema_version", "strategy_facts"})
        if unknown:
            raise RecordError(unknown[0], "not a field of this record")
        groups = {}
        for name, kind in GROUPS.items():
            part = data.get(name, {})
            if not isinstance(part, Mapping):
                raise RecordError(name, f"expected a mapping, got {part!r}")
            groups[name] = kind.from_mapping(part, name)
        facts = data.get("strategy_facts", {})
        top = {k: data[k] for k in _TOP if k in data}
        return cls(**groups, **top, strategy_facts=facts)  # type: ignore[arg-type]

    def relabel(self, labels: Mapping[str, object]) -> CellRecord:
        """The same record with identity labels of the current plan (ids a suite renamed)."""
        known = {f.name for f in _fields(Identity)}
        update: dict[str, Any] = {k: v for k, v in labels.items() if k in known and k != "key"}
        if not update:
            return self
        return dataclasses.replace(self, identity=dataclasses.replace(self.identity, **update))


def migrate_v1(data: Mapping[str, object]) -> dict[str, object]:
    """A schema-1 record as a flat row of today's columns: typed extras lose their ``extra_``
    prefix, the others become strategy facts, the duplicate ``extra_n_trials`` goes."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if key in DROPPED_V1:
            continue
        if key in RENAMED_V1:
            key = RENAMED_V1[key]
        elif key.startswith("extra_") and key[len("extra_") :] not in CellRecord.COLUMNS:
            key = key[len("extra_") :]
        out[key] = value
    return out


def _columns() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, kind in GROUPS.items():
        for f in _fields(kind):
            assert f.name not in out, f"record column {f.name!r} is in two groups"
            out[f.name] = name
    for name in _TOP:
        out[name] = None
    return out


CellRecord.COLUMNS = _columns()

DTYPES: dict[str, str] = {
    **{f.name: f.dtype for kind in GROUPS.values() for f in _fields(kind)},
    "status": "str",
    "error": "str",
    "traceback": "str",
}
"""Column -> pandas dtype of every record column (strategy facts keep what pandas infers)."""

FIELD_GROUPS: dict[str, frozenset[str]] = {
    name: frozenset(f.name for f in _fields(kind)) for name, kind in GROUPS.items()
}
"""Group name -> its columns (a reader can check that what it reads is declared)."""

__all__ = [
    "DTYPES",
    "FIELD_GROUPS",
    "GROUPS",
    "JSON",
    "RENAMED_V1",
    "SCHEMA_VERSION",
    "Artifacts",
    "CellRecord",
    "Cost",
    "Diagnostics",
    "Identity",
    "Metrics",
    "Provenance",
    "RecordError",
    "Role",
    "SelectionSummary",
    "Status",
    "Tuning",
    "Verdict",
    "migrate_v1",
]
