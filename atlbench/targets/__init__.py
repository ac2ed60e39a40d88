"""Target tasks by kind (registry): builtin, folder, csv, hf_dataset.

``validate_target`` checks a suite entry without loading data; ``load_target`` loads (memoised per
process, since built-in generation and file decoding are worth doing once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from atlbench.cache import content_hash
from atlbench.errors import DataError
from atlbench.registry import Registry
from atlbench.targets.base import Split, TaskData

__all__ = ["TARGET_KINDS", "Split", "TaskData", "load_target", "target_modality", "validate_target"]


@dataclass(frozen=True)
class TargetKind:
    params: type[BaseModel]
    loader: Callable[[str, Any], TaskData]
    modality: Callable[[Any], str]


TARGET_KINDS: Registry[TargetKind] = Registry("target kind")


def _register_builtin_kinds() -> None:
    from atlbench.targets import builtin, files, hf

    TARGET_KINDS.register("builtin")(
        TargetKind(builtin.BuiltinParams, builtin.load_builtin, builtin.task_modality)
    )
    TARGET_KINDS.register("folder")(
        TargetKind(files.FolderParams, files.load_folder, lambda p: "image")
    )
    TARGET_KINDS.register("csv")(TargetKind(files.CSVParams, files.load_csv, lambda p: "text"))
    TARGET_KINDS.register("hf_dataset")(
        TargetKind(
            hf.HFDatasetParams,
            hf.load_hf_dataset,
            lambda p: "text" if p.text_column else "image",
        )
    )


_register_builtin_kinds()


def _params(entry: Any) -> Any:
    return TARGET_KINDS.get(entry.kind).params.model_validate(entry.params)


def validate_target(entry: Any) -> tuple[str, str] | None:
    """``(field path suffix, message)`` for the first problem in a target entry, else None."""
    from atlbench.suite import _first_error

    try:
        _params(entry)
    except ValidationError as err:
        where, message = _first_error(err)
        return (f".{where}" if where else ""), message
    return None


def target_modality(entry: Any) -> str:
    return TARGET_KINDS.get(entry.kind).modality(_params(entry))


def target_fingerprint(entry: Any) -> dict[str, Any]:
    """What determines a target's content, without loading it (for cell keys)."""
    return {"kind": entry.kind, "params": _params(entry).model_dump()}


_LOADED: dict[str, TaskData] = {}


def load_target(entry: Any) -> TaskData:
    key = content_hash(target_fingerprint(entry)) + entry.id
    if key not in _LOADED:
        kind = TARGET_KINDS.get(entry.kind)
        try:
            task = kind.loader(entry.id, _params(entry))
        except DataError as err:
            raise DataError(f"target {entry.id!r}: {err}") from None
        _LOADED[key] = task
    return _LOADED[key]
