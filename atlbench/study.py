"""Resolve: a validated suite becomes a :class:`Study` of typed sources, targets and strategies.

Parse, resolve, plan. Parsing checks the shape of the suite (:mod:`atlbench.suite`); resolving
turns each entry, once, into an object the rest of atlbench trusts: a :class:`Source` with the
content fingerprint of its weights, a :class:`Target` with the content fingerprint of its data,
and a :class:`StrategySpec` with its validated params, its own training settings and search
space, and its roles (baseline, trains the encoder, reads features). Plan, runner, analysis and
report consume only these. Every problem found here is a one-line error naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import atlbench._components  # noqa: F401  (registers the built-in components)
from atlbench.errors import AtlbenchError, SuiteError
from atlbench.protocol import Dimension, merged_training
from atlbench.registry import SOURCE_KINDS, STRATEGIES, TARGET_KINDS, suggest
from atlbench.sources._base import Source, SourceOptions
from atlbench.strategies._base import StrategySpec
from atlbench.suite import ENTRY_KEYS, SuiteBase, parse_suite, read_suite_file
from atlbench.targets._base import Target

__all__ = ["Study", "load_study", "parse_study", "resolve_search"]


@dataclass(frozen=True, eq=False)
class Study:
    """A resolved suite. ``data`` is the validated suite as JSON: what remote workers receive."""

    suite: SuiteBase
    origin: str
    data: dict[str, Any]
    sources: dict[str, Source]
    targets: dict[str, Target]
    strategies: tuple[StrategySpec, ...]

    @property
    def name(self) -> str:
        return self.suite.name

    @property
    def budgeted(self) -> bool:
        return self.suite.validation == "budgeted"

    def source(self, source_id: str) -> Source:
        return self.sources[source_id]

    def target(self, target_id: str) -> Target:
        return self.targets[target_id]

    def strategy(self, label: str) -> StrategySpec:
        return next(s for s in self.strategies if s.label == label)

    @property
    def baseline(self) -> StrategySpec | None:
        return next((s for s in self.strategies if s.is_baseline), None)

    def pick(self, kind: str, ids: list[str] | None) -> list[str]:
        """Validate ids given on the command line against the suite (one-line errors)."""
        known = list(self.sources if kind == "source" else self.targets)
        for i in ids or []:
            if i not in known:
                raise AtlbenchError(
                    f"{self.origin}: no {kind} {i!r}{suggest(i, known)}; the suite has: "
                    f"{', '.join(known)}"
                )
        return list(ids) if ids else known


def _resolve_sources(suite: Any, origin: str) -> dict[str, Source]:
    out = {}
    for i, entry in enumerate(suite.sources):
        kind = SOURCE_KINDS.get(entry.kind)
        options = SourceOptions(suite.trust_remote_code, entry.reported_accuracy, entry.eval_on)
        try:
            out[entry.id] = kind.resolve(entry.id, entry.params, options)
        except (AtlbenchError, OSError) as err:
            raise SuiteError(f"{origin}: sources[{i}].{entry.kind}: {err}") from None
    return out


def _resolve_targets(suite: Any, origin: str) -> dict[str, Target]:
    out = {}
    for i, entry in enumerate(suite.targets):
        kind = TARGET_KINDS.get(entry.kind)
        try:
            content = kind.content(entry.params)
        except (AtlbenchError, OSError) as err:
            raise SuiteError(f"{origin}: targets[{i}].{entry.kind}: {err}") from None
        out[entry.id] = Target(
            id=entry.id,
            kind=entry.kind,
            params=entry.params,
            modality=kind.modality(entry.params),
            fingerprint={"kind": entry.kind, **content},
            loader=kind.load,
        )
    return out


def resolve_search(
    cls: Any, params: Any, suite_wide: dict[str, Dimension], own: dict[str, Dimension] | None
) -> dict[str, Dimension]:
    """A strategy's search space: its defaults, then the suite-wide ``training.search`` for the
    knobs it has, then its own ``search``; a parameter set explicitly in the suite is fixed."""
    space: dict[str, Dimension] = dict(cls.default_search)
    searchable = set(space) | {"weight_decay"} | set(getattr(cls, "searchable", ()))
    space |= {k: v for k, v in suite_wide.items() if k in searchable}
    for name, dim in (own or {}).items():
        if name not in searchable:
            raise ValueError(
                f"search.{name}: {cls.name} has no searchable {name!r}"
                f"{suggest(name, sorted(searchable))}"
            )
        space[name] = dim
    for name in sorted(params.model_fields_set & set(space)):
        value = getattr(params, name)
        if value is not None:
            space[name] = value
    return space


def _resolve_strategies(suite: Any, origin: str) -> tuple[StrategySpec, ...]:
    specs = []
    for i, entry in enumerate(suite.strategies):
        cls = STRATEGIES.get(entry.name)
        given = entry.model_dump(exclude=ENTRY_KEYS, exclude_unset=True)
        params = cls.Params.model_validate(given)
        where = f"{origin}: strategies[{i}]"
        if not cls.trainable and (entry.search or entry.training):
            raise SuiteError(
                f"{where}: {entry.name} is not trained, so it takes no search or training; its "
                "own parameters (e.g. c_grid, k_grid) are its selection grid"
            )
        try:
            training = merged_training(suite.training, entry.training or {})
            search = resolve_search(cls, params, suite.training.search, entry.search)
        except ValueError as err:
            raise SuiteError(f"{where}.{str(err).removeprefix('Value error, ')}") from None
        specs.append(
            StrategySpec(entry.label, cls, params, training, search, cls.target_group(params))
        )
    baselines = [s.label for s in specs if s.is_baseline]
    if len(baselines) > 1:
        raise SuiteError(
            f"{origin}: strategies: {len(baselines)} baseline strategies ({', '.join(baselines)}); "
            "every gain is measured against one from-scratch baseline: keep one"
        )
    return tuple(specs)


def _distinct_content(kind: str, items: dict[str, Any], origin: str) -> None:
    """Two ids with the same content would share every cell key and one would show nothing."""
    seen: dict[str, str] = {}
    for item_id, item in items.items():
        key = json.dumps(item.fingerprint, sort_keys=True, default=str)
        if key in seen:
            raise SuiteError(
                f"{origin}: {kind}s {seen[key]!r} and {item_id!r} have identical content; results "
                "are keyed by content, so keep one of them"
            )
        seen[key] = item_id


def resolve(suite: SuiteBase, origin: str = "<suite>") -> Study:
    """Turn a validated suite into typed, fingerprinted objects (no weights or data loaded)."""
    data = json.loads(suite.model_dump_json(exclude_unset=True))
    sources = _resolve_sources(suite, origin)
    targets = _resolve_targets(suite, origin)
    _distinct_content("source", sources, origin)
    _distinct_content("target", targets, origin)
    return Study(
        suite=suite,
        origin=origin,
        data=data,
        sources=sources,
        targets=targets,
        strategies=_resolve_strategies(suite, origin),
    )


def parse_study(data: Any, origin: str = "<suite>") -> Study:
    """Validate and resolve a suite mapping (from YAML, a notebook dict or a remote driver)."""
    return resolve(parse_suite(data, origin), origin)


def load_study(path: str | Path) -> Study:
    """Read, validate and resolve a suite YAML file."""
    return parse_study(read_suite_file(path), str(path))
