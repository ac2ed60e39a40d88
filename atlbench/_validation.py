"""One-line messages for pydantic validation errors: ``sources[2].timm.arch: unknown ...``.

A leaf module: the caller passes the keys a section accepts (for "did you mean" hints), so a
registry or a component can format its own errors without importing the suite schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from atlbench.registry import suggest

AllowedKeys = Callable[[tuple[Any, ...]], Sequence[str]]

_WRAPPERS = ("function-after", "function-before", "function-wrap", "function-plain")


def format_loc(loc: Sequence[Any]) -> str:
    """``('sources', 2, 'timm', 'arch')`` -> ``sources[2].timm.arch``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def first_error(
    err: ValidationError,
    allowed_keys: AllowedKeys | None = None,
    clean_loc: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None,
) -> tuple[str, str]:
    """``(field path, message)`` of the first error, with a hint for unknown keys.

    ``allowed_keys(parent_loc)`` lists the keys the section at ``parent_loc`` (pydantic's raw
    location) accepts; ``clean_loc`` drops schema-internal parts (union tags) before display.
    """
    first = err.errors(include_url=False)[0]
    raw = tuple(p for p in first["loc"] if p not in _WRAPPERS)
    loc = clean_loc(raw) if clean_loc is not None else raw
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden" and loc:
        allowed = list(allowed_keys(raw[:-1])) if allowed_keys is not None else []
        message = f"unknown key {loc[-1]!r}{suggest(str(loc[-1]), allowed) if allowed else ''}"
    elif first["type"] == "missing":
        message = "missing required field"
    elif first["type"] == "literal_error" and "expected" in (first.get("ctx") or {}):
        given = first.get("input")
        message = f"{given!r} is not allowed; expected {first['ctx']['expected']}"
    return format_loc(loc), message


def one_line(origin: str, where: str, message: str) -> str:
    """``origin: where: message`` without empty parts."""
    return ": ".join(p for p in (origin, where, message) if p)
