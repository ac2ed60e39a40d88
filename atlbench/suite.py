"""Suite files: the pydantic schema of a study, loading, and one-line validation errors.

A suite is validated once, at the edge; everything downstream trusts it. Errors name the file, the
field path (``sources[2].timm.arch``) and, where possible, the fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atlbench.errors import SuiteError
from atlbench.registry import suggest

SOURCE_KINDS = ("zoo", "timm", "hf", "checkpoint")
TARGET_KINDS = ("builtin", "folder", "csv", "hf_dataset")


class Strict(BaseModel):
    """Base for every suite section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingConfig(Strict):
    """The shared training budget: every trainable strategy, scratch included, gets the same."""

    max_epochs: int = Field(60, ge=1, le=10_000)
    patience: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    min_epoch_samples: int = Field(256, ge=0)
    lr_grid: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    grad_clip: float | None = 1.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    keep_checkpoints: bool = False
    compile: bool = False

    @field_validator("lr_grid")
    @classmethod
    def _positive_lrs(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("needs at least one learning rate")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in value):
            raise ValueError("learning rates must be positive finite numbers")
        return value


class BudgetSpec(Strict):
    """A label budget: ``per_class`` examples of each class, or a ``fraction`` of the train set."""

    per_class: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        if (self.per_class is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'per_class' (examples per class) or 'fraction'")
        return self

    @property
    def kind(self) -> str:
        return "per_class" if self.per_class is not None else "fraction"

    @property
    def value(self) -> float:
        return float(self.per_class if self.per_class is not None else self.fraction)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        if self.per_class is not None:
            return f"{self.per_class}/class"
        return f"{self.fraction * 100:g}%"  # type: ignore[operator]


class SourceEntry(Strict):
    """One source model: an ``id`` plus exactly one kind (zoo, timm, hf, checkpoint)."""

    id: str = Field(min_length=1, max_length=120)
    zoo: dict[str, Any] | None = None
    timm: dict[str, Any] | None = None
    hf: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    reported_accuracy: float | None = Field(
        None, description="the source model's own published accuracy (an estimator baseline)"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> SourceEntry:
        given = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"source {self.id!r} needs exactly one of {', '.join(SOURCE_KINDS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)

    @property
    def params(self) -> dict[str, Any]:
        return dict(getattr(self, self.kind))


class TargetEntry(Strict):
    """One target task: an ``id`` plus exactly one kind (builtin, folder, csv, hf_dataset)."""

    id: str = Field(min_length=1, max_length=120)
    builtin: dict[str, Any] | None = None
    folder: dict[str, Any] | None = None
    csv: dict[str, Any] | None = None
    hf_dataset: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TargetEntry:
        given = [k for k in TARGET_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"target {self.id!r} needs exactly one of {', '.join(TARGET_KINDS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in TARGET_KINDS if getattr(self, k) is not None)

    @property
    def params(self) -> dict[str, Any]:
        return dict(getattr(self, self.kind))


class StrategyEntry(Strict):
    """An adaptation strategy by registered ``name``; ``id`` defaults to the name."""

    name: str
    id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.id or self.name


class Suite(Strict):
    """A whole study: the grid of sources x targets x strategies x budgets x seeds."""

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"
    sources: tuple[SourceEntry, ...]
    targets: tuple[TargetEntry, ...]
    strategies: tuple[StrategyEntry, ...]
    budgets: tuple[BudgetSpec, ...] = (BudgetSpec(fraction=1.0),)
    estimators: tuple[str, ...] = ("logme",)
    training: TrainingConfig = TrainingConfig()
    cka: bool = False
    trust_remote_code: bool = False

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategy_shorthand(cls, value: Any) -> Any:
        """Allow ``- linear_probe`` and ``- {name: finetune, lr_mult: 0.1}`` alike."""
        if not isinstance(value, list | tuple):
            return value
        out = []
        for item in value:
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, dict) and "name" in item:
                known = {"name", "id"}
                params = {k: v for k, v in item.items() if k not in known}
                out.append({k: item[k] for k in known if k in item} | {"params": params})
            else:
                out.append(item)
        return out

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

    @field_validator("sources", "targets", "strategies")
    @classmethod
    def _non_empty_unique(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if not value:
            raise ValueError("the grid is empty: give at least one entry")
        ids = [getattr(v, "label", None) or v.id for v in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate id(s) {', '.join(map(repr, dupes))}: ids must be unique")
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

    def source(self, source_id: str) -> SourceEntry:
        return next(s for s in self.sources if s.id == source_id)

    def target(self, target_id: str) -> TargetEntry:
        return next(t for t in self.targets if t.id == target_id)


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('sources', 2, 'timm', 'arch')`` -> ``sources[2].timm.arch``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(err: ValidationError) -> tuple[str, str]:
    first = err.errors(include_url=False)[0]
    loc = tuple(p for p in first["loc"] if p not in ("function-after", "function-before"))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(parent)
        message = f"unknown key {loc[-1]!r}{suggest(str(loc[-1]), allowed) if allowed else ''}"
    elif first["type"] == "missing":
        message = "missing required field"
    return format_loc(loc), message


def _allowed_keys(parent: tuple[Any, ...]) -> list[str]:
    """The keys a section accepts, for 'did you mean' hints on typos."""
    sections: dict[str, type[BaseModel]] = {
        "sources": SourceEntry,
        "targets": TargetEntry,
        "strategies": StrategyEntry,
        "budgets": BudgetSpec,
        "training": TrainingConfig,
    }
    if not parent:
        return list(Suite.model_fields)
    model = sections.get(str(parent[0]))
    return list(model.model_fields) if model else []


def parse_suite(data: Any, origin: str = "<suite>") -> Suite:
    """Validate a loaded YAML mapping; raise :class:`SuiteError` with one clear line."""
    if not isinstance(data, dict):
        raise SuiteError(
            f"{origin}: a suite must be a YAML mapping with name, sources, targets, ..."
        )
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        where, message = _first_error(err)
        raise SuiteError(f"{origin}: {where}: {message}") from None
    _validate_components(suite, origin)
    return suite


def _validate_components(suite: Suite, origin: str) -> None:
    """Check names against the registries (sources, targets, strategies, estimators)."""
    from atlbench.estimators import ESTIMATORS
    from atlbench.sources import validate_source
    from atlbench.strategies import STRATEGIES, strategy_params, validate_strategy
    from atlbench.targets import validate_target

    for i, source in enumerate(suite.sources):
        problem = validate_source(source)
        if problem:
            where, message = problem
            raise SuiteError(f"{origin}: sources[{i}].{source.kind}{where}: {message}")
    for i, target in enumerate(suite.targets):
        problem = validate_target(target)
        if problem:
            where, message = problem
            raise SuiteError(f"{origin}: targets[{i}].{target.kind}{where}: {message}")
    target_ids = [t.id for t in suite.targets]
    for i, strategy in enumerate(suite.strategies):
        if strategy.name not in STRATEGIES:
            raise SuiteError(
                f"{origin}: strategies[{i}].name: {STRATEGIES.unknown_message(strategy.name)}"
            )
        problem = validate_strategy(strategy)
        if problem:
            raise SuiteError(f"{origin}: strategies[{i}]{problem[0]}: {problem[1]}")
        group = STRATEGIES.get(strategy.name).target_group(strategy_params(strategy))
        for j, tid in enumerate(group):
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


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML file."""
    path = Path(path)
    origin = str(path)
    if not path.exists():
        raise SuiteError(f"{origin}: no such suite file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(f"{origin}: {where}invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{origin}: not UTF-8 text") from None
    return parse_suite(data, origin)
