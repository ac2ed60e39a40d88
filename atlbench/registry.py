"""Every registry of atlbench in one leaf module: the timm ``register_model`` pattern.

A component registers itself with one decorator in its own module::

    @register_source("timm")
    class TimmSource(SourceKind): ...

    @register_estimator("logme", input="features")
    def logme(features, labels) -> float: ...

This module imports nothing from atlbench, so any family may import it and the suite schema can be
assembled from what is registered without importing a family. Which modules hold the built-in
components is listed once, in :mod:`atlbench._components`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")
KindT = TypeVar("KindT", bound=type[Any])  # a registered class: source/target kind, strategy
EstimatorFn = TypeVar("EstimatorFn", bound=Callable[..., Any])

__all__ = [
    "ESTIMATORS",
    "EXECUTORS",
    "REPORT_SECTIONS",
    "SOURCE_KINDS",
    "STRATEGIES",
    "TARGET_KINDS",
    "EstimatorSpec",
    "Registry",
    "register_estimator",
    "register_executor",
    "register_report_section",
    "register_source",
    "register_strategy",
    "register_target",
]


class Registry(Generic[T]):
    """A named collection of components; unknown names get a 'did you mean' hint."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` on a class, function or instance."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def remove(self, name: str) -> None:
        """Unregister (plug-in tests clean up after themselves)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    __getitem__ = get

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.kind} {name!r}{suggest(name, self._items)}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def values(self) -> list[T]:
        return [v for _, v in self.items()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def suggest(name: str, candidates: Iterable[object]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest candidate, or a list of choices."""
    options = [str(c) for c in candidates]
    close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if 0 < len(options) <= 12:
        return f" (choose from: {', '.join(sorted(options))})"
    return ""


# -- the families -------------------------------------------------------------------------------

SOURCE_KINDS: Registry[Any] = Registry("source kind")  # SourceKind subclasses
TARGET_KINDS: Registry[Any] = Registry("target kind")  # TargetKind subclasses
STRATEGIES: Registry[Any] = Registry("strategy")  # Strategy subclasses
ESTIMATORS: Registry[EstimatorSpec] = Registry("estimator")
EXECUTORS: Registry[Any] = Registry("executor")  # factories: ExecutorConfig -> executor
REPORT_SECTIONS: Registry[Any] = Registry("report section")  # report Section subclasses


def register_source(name: str) -> Callable[[KindT], KindT]:
    """Class decorator for a source kind; the class's ``name`` is set to ``name``."""
    return _named(SOURCE_KINDS, name)


def register_target(name: str) -> Callable[[KindT], KindT]:
    """Class decorator for a target kind; the class's ``name`` is set to ``name``."""
    return _named(TARGET_KINDS, name)


def register_strategy(name: str) -> Callable[[KindT], KindT]:
    """Class decorator for an adaptation strategy; the class's ``name`` is set to ``name``."""
    return _named(STRATEGIES, name)


def register_executor(name: str) -> Callable[[T], T]:
    return EXECUTORS.register(name)


def register_report_section(name: str, order: float) -> Callable[[KindT], KindT]:
    """Class decorator for a report section: ``name`` is its anchor and ``order`` its place among
    its siblings on the page (the built-in top-level sections use 10, 20, ... 100)."""

    def decorator(cls: KindT) -> KindT:
        cls.order = order
        return _named(REPORT_SECTIONS, name)(cls)

    return decorator


def _named(registry: Registry[Any], name: str) -> Callable[[KindT], KindT]:
    def decorator(cls: KindT) -> KindT:
        cls.name = name
        registry.add(name, cls)
        return cls

    return decorator


@dataclass(frozen=True)
class EstimatorSpec:
    """One registered estimator.

    ``fn(features_or_probs, labels) -> float`` where higher means "transfers better". ``input``
    says what it reads: pooled ``features`` (N, D) or the source head's ``probs`` (N, Z).
    ``set_level`` estimators (scores normalised over the candidate set) take a list of arrays,
    one per candidate, and return one score per candidate; their scores depend on the set.
    """

    name: str
    fn: Callable[..., Any]
    input: Literal["features", "probs"]
    doc: str
    set_level: bool = False


def register_estimator(
    name: str, input: Literal["features", "probs"] = "features", set_level: bool = False
) -> Callable[[EstimatorFn], EstimatorFn]:
    """Function decorator: register ``fn`` as estimator ``name``; the function is unchanged."""

    def decorator(fn: EstimatorFn) -> EstimatorFn:
        doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
        ESTIMATORS.add(name, EstimatorSpec(name, fn, input, doc[0] if doc else "", set_level))
        return fn

    return decorator
