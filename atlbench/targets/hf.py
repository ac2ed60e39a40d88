"""Hugging Face ``datasets`` targets: hub ids (pinned by revision) or local files, column-mapped.

Images are decoded one row at a time into the decoded-image cache (:mod:`atlbench.datapipe`),
keyed by the target's content and the rows' ``datasets`` fingerprint, and read memory-mapped.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atlbench._digests import file_digest
from atlbench._hub import hub_reachable, offline_by_environment, offline_error
from atlbench.datapipe import decoded_images
from atlbench.errors import DataError
from atlbench.registry import register_target
from atlbench.targets._base import (
    Split,
    TargetKind,
    TaskData,
    assemble_splits,
    check_labels,
    encode_labels,
)

OFFLINE_HINT = (
    "save it with `datasets.load_dataset(...).save_to_disk()` elsewhere, or give local "
    "files as `hf_dataset: {path: csv|imagefolder|parquet, data_files: ...}`"
)


class HFDatasetParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(min_length=1, description="hub id, or a builder like 'csv'/'imagefolder'")
    name: str | None = None
    revision: str | None = None
    data_files: dict[str, str] | str | None = None
    image_column: str | None = None
    text_column: str | None = None
    label_column: str = "label"
    train_split: str = "train"
    val_split: str | None = None
    test_split: str | None = "test"
    image_size: int = Field(64, ge=8, le=1024)
    max_train: int | None = Field(None, ge=1)
    max_eval: int | None = Field(None, ge=1)
    seed: int = 0
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)  # used only when there is no test split


def _image(img: Any, size: int, where: str, i: int) -> np.ndarray:
    try:
        img = img.convert("RGB").resize((size, size))
    except Exception as err:
        raise DataError(f"{where}: row {i}: unreadable image ({type(err).__name__})") from None
    return np.asarray(img, dtype=np.uint8)


def _inputs(part: Any, params: HFDatasetParams, where: str, key: dict[str, Any]) -> Any:
    """Texts as a list; images decoded one row at a time into the decoded-image cache (keyed by
    ``key``, the dataset's content), never all in memory."""
    if params.text_column:
        return [str(t) for t in part[params.text_column]]
    column = part.select_columns([params.image_column])

    def decode(i: int) -> np.ndarray:
        return _image(column[i][params.image_column], params.image_size, where, i)

    return decoded_images(key, len(part), params.image_size, decode)


def load_hf_dataset(
    task_id: str, params: HFDatasetParams, split_seed: int | None = None
) -> TaskData:
    import datasets

    if (params.image_column is None) == (params.text_column is None):
        raise DataError(f"{params.path}: set exactly one of image_column or text_column")
    local = params.data_files is not None
    if not local and not hub_reachable() and not offline_by_environment():
        # the hub is down but the libraries were not told: they would retry for a minute
        raise offline_error("dataset", params.path, OFFLINE_HINT)
    try:
        ds = datasets.load_dataset(
            params.path, params.name, revision=params.revision, data_files=params.data_files
        )
    except (ConnectionError, OSError, FileNotFoundError) as err:
        if not local:
            raise offline_error("dataset", params.path, OFFLINE_HINT) from None
        raise DataError(f"{params.path}: could not load ({err})") from None
    for split in filter(None, (params.train_split, params.val_split, params.test_split)):
        if split not in ds:
            raise DataError(f"{params.path}: no split {split!r} (splits: {', '.join(ds)})")
    train = ds[params.train_split]
    column = params.image_column or params.text_column
    for col in (column, params.label_column):
        if col not in train.column_names:
            raise DataError(
                f"{params.path}: no column {col!r} (columns: {', '.join(train.column_names)})"
            )
    feature = train.features[params.label_column]
    class_names = list(getattr(feature, "names", None) or [])

    def rows_of(split_name: str, limit: int | None) -> Any:
        part = ds[split_name]
        if limit is not None and len(part) > limit:
            part = part.shuffle(seed=params.seed).select(range(limit))
        return part

    wanted = {"train": (params.train_split, params.max_train)}
    if params.val_split:
        wanted["val"] = (params.val_split, params.max_eval)
    if params.test_split:
        wanted["test"] = (params.test_split, params.max_eval)
    rows = {role: rows_of(name, limit) for role, (name, limit) in wanted.items()}
    raw_labels = {role: list(r[params.label_column]) for role, r in rows.items()}
    if class_names:  # a ClassLabel column: ids are already contiguous, names known
        labels = {
            role: check_labels(np.asarray(r), len(class_names), f"{params.path}[{role}]")
            for role, r in raw_labels.items()
        }
    else:  # plain ints or strings: one contiguous mapping over every split
        raw = [v for r in raw_labels.values() for v in r]
        encoded, class_names = encode_labels(raw, f"{params.path}: {params.label_column}")
        cuts = np.cumsum([len(r) for r in raw_labels.values()])[:-1]
        labels = dict(zip(rows, np.split(encoded, cuts), strict=True))
    content = HFDatasetTarget.content(params)
    splits = {}
    for role, part in rows.items():
        name = wanted[role][0]
        key = {
            "hf": content,
            "part": role,
            "split": name,
            "rows": getattr(part, "_fingerprint", None),
        }
        splits[role] = Split(_inputs(part, params, f"{params.path}[{name}]", key), labels[role])
    return assemble_splits(
        task_id,
        "text" if params.text_column else "image",
        class_names,
        splits,
        params.seed if split_seed is None else split_seed,
        params.val_fraction,
        params.test_fraction,
        {},
    )


def data_file_paths(data_files: dict[str, str] | str | None) -> list[Path]:
    """The local files a ``data_files`` spec names (globs expanded), sorted."""
    if data_files is None:
        return []
    specs = [data_files] if isinstance(data_files, str) else list(data_files.values())
    out: set[Path] = set()
    for spec in specs:
        matches = glob.glob(str(Path(spec).expanduser()), recursive=True)
        if not matches:
            raise DataError(f"data file {spec!r} does not exist")
        out.update(Path(m) for m in matches if Path(m).is_file())
    return sorted(out)


@register_target("hf_dataset")
class HFDatasetTarget(TargetKind[HFDatasetParams]):
    """``hf_dataset: {path, name, revision, data_files, columns...}``: a ``datasets`` dataset.

    Local ``data_files`` are identified by their digests; a hub dataset by its id and revision
    (pin ``revision`` for reproducible keys).
    """

    Params = HFDatasetParams

    @classmethod
    def modality(cls, params: HFDatasetParams) -> str:
        return "text" if params.text_column else "image"

    @classmethod
    def content(cls, params: HFDatasetParams) -> dict[str, Any]:
        out: dict[str, Any] = {"hf_dataset": params.model_dump(exclude={"data_files"})}
        files = data_file_paths(params.data_files)
        if files:
            out["files"] = {f.name: file_digest(f) for f in files}
            if isinstance(params.data_files, dict):
                out["roles"] = sorted(params.data_files)
        return out

    @classmethod
    def load(
        cls, target_id: str, params: HFDatasetParams, split_seed: int | None = None
    ) -> TaskData:
        return load_hf_dataset(target_id, params, split_seed)
