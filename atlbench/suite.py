"""Suite files: the schema of a study, assembled from the registries, and one-line errors.

Every source kind, target kind and strategy registers its own params model; the suite schema is a
discriminated union of them, built here from :mod:`atlbench.registry` without importing any
family (the built-in ones are registered by :mod:`atlbench._components`, which
:func:`atlbench.study.load_study` imports). A suite is validated once, at the edge; errors name
the file, the field path (``sources[2].timm.arch``) and, where possible, the fix.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from atlbench._validation import first_error, one_line
from atlbench.budgets import BudgetSpec
from atlbench.errors import SuiteError
from atlbench.protocol import SHARED_ONLY, Dimension, Strict, TrainingConfig
from atlbench.registry import SOURCE_KINDS, STRATEGIES, TARGET_KINDS, Registry, suggest
from atlbench.seeds import SeedSchedule

__all__ = ["ENTRY_KEYS", "SuiteBase", "load_suite", "parse_suite", "read_suite_file"]

ENTRY_KEYS = {"name", "id", "search", "training"}  # strategy-entry keys that are not params


class SourceEntry(Strict):
    """Fields every source entry has besides its one kind (``timm: {...}`` etc.)."""

    id: str = Field(min_length=1, max_length=120)
    reported_accuracy: float | None = Field(
        None, description="the source model's own published accuracy (an estimator baseline)"
    )
    eval_on: str | None = Field(
        None, description="a target id holding the source task's own test data (forgetting)"
    )

    @property
    def kind(self) -> str:
        return next(k for k in SOURCE_KINDS if getattr(self, k, None) is not None)

    @property
    def params(self) -> Any:
        return getattr(self, self.kind)


class TargetEntry(Strict):
    """Fields every target entry has besides its one kind (``builtin: {...}`` etc.)."""

    id: str = Field(min_length=1, max_length=120)

    @property
    def kind(self) -> str:
        return next(k for k in TARGET_KINDS if getattr(self, k, None) is not None)

    @property
    def params(self) -> Any:
        return getattr(self, self.kind)


class StrategyEntry(Strict):
    """A strategy by registered ``name``; ``id`` defaults to the name. Its own parameters sit
    beside these keys in the suite (``{name: finetune, layers: 2}``)."""

    id: str | None = Field(None, min_length=1, max_length=120)
    search: dict[str, Dimension] | None = None
    training: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.id or self.name  # type: ignore[attr-defined]

    @field_validator("training")
    @classmethod
    def _own_training(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        shared = sorted(set(value) & set(SHARED_ONLY))
        if shared:
            raise ValueError(
                f"{shared[0]!r} is the same for every strategy by construction; set it in the "
                "suite's training section"
            )
        unknown = sorted(set(value) - set(TrainingConfig.model_fields))
        if unknown:
            hint = suggest(unknown[0], TrainingConfig.model_fields)
            raise ValueError(f"unknown training key {unknown[0]!r}{hint}")
        return value


class SeedScheduleSpec(Strict):
    """``seeds: {start: 3, step: 2, max: 15}``: start with ``start`` seeds, add ``step`` at a
    time to the comparisons still open, stop at ``max`` (:mod:`atlbench.analysis._sequential`)."""

    start: int = Field(3, ge=2, le=1000)
    step: int = Field(2, ge=1, le=1000)
    max: int = Field(15, ge=2, le=1000)
    first: int = 0  # the seeds are first, first + 1, ...

    @model_validator(mode="after")
    def _ordered(self) -> SeedScheduleSpec:
        if self.max < self.start:
            raise ValueError(f"max ({self.max}) must be >= start ({self.start})")
        return self

    def schedule(self) -> SeedSchedule:
        return SeedSchedule(self.start, self.step, self.max, self.first)


class ComputeCap(Strict):
    """``compute: {cells: N}`` or ``{hours: H}``: a cap on the adaptive sweep's work (not the
    label ``budgets``). The first round always runs; added seeds stop at the cap."""

    cells: int | None = Field(None, ge=1)
    hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> ComputeCap:
        if (self.cells is None) == (self.hours is None):
            raise ValueError("give exactly one of cells or hours")
        return self


class SuiteBase(Strict):
    """A whole study: the grid of sources x targets x strategies x budgets x seeds."""

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    # a list of seeds (fixed), or a schedule: the list holds the first round's seeds then
    seeds: tuple[int, ...] = (0, 1, 2)
    seed_schedule: SeedScheduleSpec | None = None
    compute: ComputeCap | None = None
    # with a schedule: stop giving seeds to a recipe shown worse than its target's leader (for
    # "which is best" questions: it leaves that recipe's other comparisons open)
    racing: bool = False
    device: str = "auto"
    budgets: tuple[BudgetSpec, ...] = (BudgetSpec(fraction=1.0),)
    estimators: tuple[str, ...] = ("logme",)
    training: TrainingConfig = TrainingConfig()
    # "budgeted": select inside the label budget and retrain on all of it (realistic few-shot);
    # "full": select on the target's whole validation split (optimistic, labelled so).
    validation: Literal["budgeted", "full"] = "budgeted"
    # draw the train/val/test split of file and built-in targets from each cell's seed, so
    # intervals also cover split variance (Bouthillier et al. 2021); off: one fixed split
    resample_splits: bool = False
    equivalence_margin: float | None = Field(None, gt=0, lt=1)
    correction: Literal["holm", "bh"] = "holm"
    # what estimators are validated against: a strategy id, or "finetune" (the best-scoring
    # strategy registered as finetune)
    truth: str = "finetune"
    cka: bool = False
    trust_remote_code: bool = False

    @model_validator(mode="before")
    @classmethod
    def _schedule(cls, data: Any) -> Any:
        """``seeds: {start, step, max}`` is a schedule: the first round's seeds go to ``seeds``."""
        if isinstance(data, dict) and isinstance(data.get("seeds"), dict):
            if data.get("seed_schedule") is not None:
                raise ValueError("seeds: give a list or a schedule, not both")
            try:
                spec = SeedScheduleSpec.model_validate(data["seeds"])
            except ValidationError as err:
                where, message = first_error(err)
                raise ValueError(f"seeds{'.' + where if where else ''}: {message}") from None
            data = dict(data) | {"seed_schedule": spec, "seeds": spec.schedule().seeds(spec.start)}
        return data

    @model_validator(mode="after")
    def _schedule_consistent(self) -> SuiteBase:
        if self.seed_schedule is not None:
            first = self.seed_schedule.schedule().seeds(self.seed_schedule.start)
            if tuple(self.seeds) != first:
                raise ValueError(f"seeds {list(self.seeds)} are not the schedule's first round")
        elif self.compute is not None:
            raise ValueError("compute: caps an adaptive sweep; give seeds as {start, step, max}")
        return self

    @property
    def schedule(self) -> SeedSchedule | None:
        return self.seed_schedule.schedule() if self.seed_schedule is not None else None

    @property
    def all_seeds(self) -> tuple[int, ...]:
        """Every seed the sweep may use (the schedule's maximum)."""
        schedule = self.schedule
        return schedule.all_seeds if schedule is not None else self.seeds

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("needs at least one seed")
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError("use 'auto', 'cpu' or 'cuda[:N]'")
        return value

    @field_validator("budgets")
    @classmethod
    def _budgets_unique(cls, value: tuple[BudgetSpec, ...]) -> tuple[BudgetSpec, ...]:
        if not value:
            raise ValueError("the grid is empty: give at least one label budget")
        labels = [b.label for b in value]
        if len(set(labels)) != len(labels):
            raise ValueError("duplicate label budgets")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> SuiteBase:
        for section in ("sources", "targets", "strategies"):
            entries = getattr(self, section, ())
            if not entries:
                raise ValueError(f"{section}: the grid is empty: give at least one entry")
            ids = [getattr(e, "label", None) or e.id for e in entries]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(
                    f"{section}: duplicate id(s) {', '.join(map(repr, dupes))}: ids must be unique"
                )
        return self

    def source(self, source_id: str) -> Any:
        return next(s for s in self.sources if s.id == source_id)  # type: ignore[attr-defined]

    def target(self, target_id: str) -> Any:
        return next(t for t in self.targets if t.id == target_id)  # type: ignore[attr-defined]


# -- the schema, from the registries ------------------------------------------------------------


def _kind_of(registry: Registry[Any]) -> Any:
    def discriminate(value: Any) -> str | None:
        if isinstance(value, dict):
            given = [k for k in registry if k in value]
        else:
            given = [k for k in registry if getattr(value, k, None) is not None]
        return given[0] if len(given) == 1 else None

    return discriminate


def _name_of(value: Any) -> str | None:
    return value.get("name") if isinstance(value, dict) else getattr(value, "name", None)


def _strategy_entry(name: str, cls: Any) -> type[BaseModel]:
    clash = ENTRY_KEYS & set(cls.Params.model_fields)
    if clash:
        raise ValueError(f"strategy {name!r}: params may not be called {sorted(clash)}")
    # field types built at run time: typed Any, they are no static type forms
    fields: dict[str, Any] = {"name": (Literal[name], ...)}
    return create_model(f"{name}_strategy", __base__=(StrategyEntry, cls.Params), **fields)


def _kind_entry(model: str, base: type[BaseModel], kind: str, params: Any) -> type[BaseModel]:
    fields: dict[str, Any] = {kind: (params, ...)}
    return create_model(model, __base__=base, **fields)


def _union(members: dict[str, type[BaseModel]], discriminator: Any) -> Any:
    tagged = tuple(Annotated[model, Tag(tag)] for tag, model in members.items())
    return Annotated[Union[tagged], Discriminator(discriminator)]  # noqa: UP007


_SCHEMA: dict[tuple[Any, ...], type[SuiteBase]] = {}


def suite_schema() -> type[SuiteBase]:
    """The ``Suite`` model for what is registered now (rebuilt when a plug-in registers)."""
    state = tuple(
        (name, id(obj))
        for reg in (SOURCE_KINDS, TARGET_KINDS, STRATEGIES)
        for name, obj in reg.items()
    )
    if state not in _SCHEMA:
        sources = {
            k: _kind_entry(f"{k}_source", SourceEntry, k, kind.Params)
            for k, kind in SOURCE_KINDS.items()
        }
        targets = {
            k: _kind_entry(f"{k}_target", TargetEntry, k, kind.Params)
            for k, kind in TARGET_KINDS.items()
        }
        strategies = {k: _strategy_entry(k, cls) for k, cls in STRATEGIES.items()}
        # field types built at run time: typed Any, they are no static type forms
        source: Any = _union(sources, _kind_of(SOURCE_KINDS))
        target: Any = _union(targets, _kind_of(TARGET_KINDS))
        strategy: Any = _union(strategies, _name_of)
        fields: dict[str, Any] = {
            "sources": (tuple[source, ...], ...),
            "targets": (tuple[target, ...], ...),
            "strategies": (tuple[strategy, ...], ...),
        }
        _SCHEMA.clear()
        _SCHEMA[state] = create_model("Suite", __base__=SuiteBase, **fields)
    return _SCHEMA[state]


Suite = SuiteBase  # the type callers annotate with; instances come from ``suite_schema()``


# -- errors ---------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated wrappers."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or isinstance(tp, types.UnionType):
        return [t for a in get_args(tp) for t in _unwrap(a)]
    return [tp]


def _tagged(tp: Any, tag: str) -> Any:
    """The member of a tagged union whose tag is ``tag`` (None when ``tp`` is not one)."""
    if get_origin(tp) is not Annotated:
        return None
    for member in get_args(get_args(tp)[0]):
        if any(isinstance(m, Tag) and m.tag == tag for m in getattr(member, "__metadata__", ())):
            return get_args(member)[0]
    return None


def _step(tp: Any, part: Any) -> Any:
    """The type found at ``part`` (a field name, a list index or a union tag) inside ``tp``."""
    if isinstance(part, str) and (member := _tagged(tp, part)) is not None:
        return member
    for candidate in _unwrap(tp):
        if isinstance(part, int) and get_origin(candidate) in (tuple, list):
            return get_args(candidate)[0]
        is_model = isinstance(candidate, type) and issubclass(candidate, BaseModel)
        if is_model and isinstance(part, str) and part in candidate.model_fields:
            return candidate.model_fields[part].annotation
    return None


def _allowed_keys(schema: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    """The keys the section at raw location ``parent`` accepts (for 'did you mean' hints)."""
    current: Any = schema
    for part in parent:
        current = _step(current, part)
        if current is None:
            return []
    models = [t for t in _unwrap(current) if isinstance(t, type) and issubclass(t, BaseModel)]
    return [k for k in models[0].model_fields if k != "name"] if models else []


def _entry_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tag pydantic puts after ``sources[i]``: for sources and targets it
    repeats the kind's key (``sources[2].timm.arch``), for strategies it is the name."""
    if len(loc) > 2 and loc[0] in ("sources", "targets", "strategies") and isinstance(loc[1], int):
        return loc[:2] + loc[3:]
    return loc


def _precheck(data: dict[str, Any], origin: str) -> None:
    """Kinds and strategy names, with messages better than a union's 'no tag matched'."""
    for section, registry, what in (
        ("sources", SOURCE_KINDS, "source"),
        ("targets", TARGET_KINDS, "target"),
    ):
        for i, entry in enumerate(data.get(section) or ()):
            if not isinstance(entry, dict):
                continue
            given = [k for k in entry if k in registry]
            if len(given) != 1:
                kinds = ", ".join(registry.names())
                raise SuiteError(
                    f"{origin}: {section}[{i}]: {what} {entry.get('id')!r} needs exactly one of "
                    f"{kinds} (got {', '.join(given) or 'none'})"
                )
    for i, entry in enumerate(data.get("strategies") or ()):
        name = (
            entry
            if isinstance(entry, str)
            else entry.get("name")
            if isinstance(entry, dict)
            else None
        )
        if name is None and isinstance(entry, dict):
            raise SuiteError(f"{origin}: strategies[{i}].name: missing required field")
        if isinstance(name, str) and name not in STRATEGIES:
            raise SuiteError(f"{origin}: strategies[{i}].name: {STRATEGIES.unknown_message(name)}")


def _strategy_shorthand(data: dict[str, Any]) -> dict[str, Any]:
    """``- linear_probe`` means ``- {name: linear_probe}``."""
    items = data.get("strategies")
    if isinstance(items, list | tuple):
        data = data | {"strategies": [{"name": s} if isinstance(s, str) else s for s in items]}
    return data


def parse_suite(data: Any, origin: str = "<suite>") -> SuiteBase:
    """Validate a loaded YAML mapping against the registered components; raise
    :class:`SuiteError` with one clear line."""
    if not isinstance(data, dict):
        raise SuiteError(
            f"{origin}: a suite must be a YAML mapping with name, sources, targets, ..."
        )
    _precheck(data, origin)
    schema = suite_schema()
    try:
        suite = schema.model_validate(_strategy_shorthand(data))
    except ValidationError as err:
        where, message = first_error(err, lambda parent: _allowed_keys(schema, parent), _entry_loc)
        raise SuiteError(one_line(origin, where, message)) from None
    _check_names(suite, origin)
    return suite


def _check_names(suite: Any, origin: str) -> None:
    """Cross-references: strategy groups name suite targets; estimators are registered."""
    from atlbench.registry import ESTIMATORS

    target_ids = [t.id for t in suite.targets]
    for i, source in enumerate(suite.sources):
        if source.eval_on is not None and source.eval_on not in target_ids:
            raise SuiteError(
                f"{origin}: sources[{i}].eval_on: unknown target {source.eval_on!r}"
                f"{suggest(source.eval_on, target_ids)}"
            )
    for i, entry in enumerate(suite.strategies):
        cls = STRATEGIES.get(entry.name)
        for j, tid in enumerate(cls.target_group(entry)):
            if tid not in target_ids:
                raise SuiteError(
                    f"{origin}: strategies[{i}].group[{j}]: unknown target {tid!r}"
                    f"{suggest(tid, target_ids)}; the group lists ids from targets"
                )
    for i, name in enumerate(suite.estimators):
        if name not in ESTIMATORS:
            raise SuiteError(
                f"{origin}: estimators[{i}]: unknown estimator {name!r}{suggest(name, ESTIMATORS)}"
            )


def read_suite_file(path: str | Path) -> Any:
    """The YAML mapping of a suite file, or a one-line :class:`SuiteError`."""
    path = Path(path)
    origin = str(path)
    if not path.exists():
        raise SuiteError(f"{origin}: no such suite file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(f"{origin}: {where}invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{origin}: not UTF-8 text") from None


def load_suite(path: str | Path) -> SuiteBase:
    """Read and validate a suite YAML file (against what is registered)."""
    return parse_suite(read_suite_file(path), str(path))
