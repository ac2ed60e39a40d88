"""Name -> factory registries (the timm ``register_model`` pattern) instead of if-chains."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories; unknown names get a 'did you mean' hint."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        hint = suggest(name, self._items)
        return f"unknown {self.kind} {name!r}{hint}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def suggest(name: str, candidates: object) -> str:
    """Return `` (did you mean 'x'?)`` for the closest candidate, or a list of choices."""
    options = [str(c) for c in candidates]  # type: ignore[union-attr]
    close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if 0 < len(options) <= 12:
        return f" (choose from: {', '.join(sorted(options))})"
    return ""
