"""User data on disk: image folders and CSV text files, in the layouts people already have.

Image folders come one sub-folder per class (atlbench splits them), or in torchvision's
``ImageFolder`` split layout ``train/<class>/...`` with optional ``val/`` and ``test/`` (those
splits are used as given; a missing one is carved from ``train``). A CSV may name its split per
row in ``split_column`` (``train``, ``val``/``validation``, ``test``).

Both identify their data by content: a digest of every file (memoised by stat), so editing or
relabelling the data re-runs the cells that used it. A folder's images are decoded once into the
decoded-image cache (:mod:`atlbench.datapipe`), keyed by that digest and the image size, and
read from there memory-mapped: they stay uint8 on disk until a batch is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atlbench._digests import file_digest, tree_digest
from atlbench.datapipe import ImageRows, decoded_images
from atlbench.errors import DataError
from atlbench.registry import register_target
from atlbench.targets._base import (
    Split,
    TargetKind,
    TaskData,
    assemble_splits,
    encode_labels,
    from_single_pool,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


class FolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    image_size: int = Field(64, ge=8, le=1024)
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.3, gt=0, lt=0.6)


class CSVParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = None
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.3, gt=0, lt=0.6)
    encoding: str = "utf-8"


def load_image(path: Path, size: int) -> np.ndarray:
    """Any image mode or size -> uint8 RGB ``size x size``; corrupt files name themselves."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__})") from None


def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(class_dir: Path) -> list[Path]:
    return [f for f in sorted(class_dir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]


def folder_layout(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """``{split: [(file, class name), ...]}``: ``{"all": ...}`` for one folder per class."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist")
    dirs = _subdirs(root)
    split_dirs = {d.name: d for d in dirs if d.name.lower() in SPLIT_NAMES}
    if "train" in split_dirs:
        others = [d.name for d in dirs if d.name not in split_dirs]
        if others:
            raise DataError(
                f"{root}: has a train/ split folder and also {others[0]!r}; use either "
                "train/<class>/ (with optional val/, test/) or one folder per class"
            )
        layout: dict[str, list[tuple[Path, str]]] = {}
        for name, d in split_dirs.items():
            role = SPLIT_NAMES[name.lower()]
            if role in layout:
                raise DataError(f"{root}: two folders for the {role} split")
            layout[role] = [(f, c.name) for c in _subdirs(d) for f in _images(c)]
            if not layout[role]:
                raise DataError(f"{d}: no images in class sub-folders")
        return layout
    if len(dirs) < 2:
        raise DataError(f"{root}: needs one sub-folder per class, found {len(dirs)}")
    files = [(f, d.name) for d in dirs for f in _images(d)]
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return {"all": files}


def folder_images(
    root: Path, layout: dict[str, list[tuple[Path, str]]], size: int
) -> dict[str, ImageRows]:
    """Each part's images, decoded once into the cache (keyed by the folder's content and
    ``size``) and read from there memory-mapped: a folder larger than memory loads."""
    digest = tree_digest([f for files in layout.values() for f, _ in files], root)
    out = {}
    for role, files in layout.items():

        def decode(i: int, files: list[tuple[Path, str]] = files) -> np.ndarray:
            return load_image(files[i][0], size)

        key = {"folder": digest, "part": role}
        out[role] = decoded_images(key, len(files), size, decode)
    return out


def load_folder(task_id: str, params: FolderParams, split_seed: int | None = None) -> TaskData:
    seed = params.seed if split_seed is None else split_seed
    root = Path(params.path).expanduser()
    layout = folder_layout(root)
    raw = [c for files in layout.values() for _, c in files]
    encoded, names = encode_labels(raw, str(root))
    cuts = np.cumsum([len(v) for v in layout.values()])[:-1]
    labels = dict(zip(layout, np.split(encoded, cuts), strict=True))
    images = folder_images(root, layout, params.image_size)
    if "all" in layout:
        return from_single_pool(
            task_id, "image", images["all"], labels["all"], names, seed,
            params.val_fraction, params.test_fraction, {},
        )  # fmt: skip
    missing = set(names) - {c for _, c in layout["train"]}
    if missing:
        raise DataError(f"{root}: class(es) {sorted(missing)} have no train/ images")
    given = {role: Split(images[role], labels[role]) for role in layout}
    return assemble_splits(
        task_id, "image", names, given, seed, params.val_fraction, params.test_fraction, {}
    )


def _read_csv(path: Path, encoding: str) -> Any:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: CSV file does not exist")
    try:
        return pd.read_csv(path, encoding=encoding)
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not valid {encoding} text; set `encoding:` (e.g. latin-1)"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None


def load_csv(task_id: str, params: CSVParams, split_seed: int | None = None) -> TaskData:
    seed = params.seed if split_seed is None else split_seed
    path = Path(params.path).expanduser()
    frame = _read_csv(path, params.encoding)
    wanted = [params.text_column, params.label_column, *filter(None, [params.split_column])]
    for column in wanted:
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))}); "
                "set text_column/label_column/split_column"
            )
    texts: list[Any] = frame[params.text_column].tolist()
    if any(not isinstance(t, str) for t in texts):
        raise DataError(f"{path}: column {params.text_column!r} has empty or non-text rows")
    labels, names = encode_labels(frame[params.label_column].tolist(), str(path))
    if params.split_column is None:
        return from_single_pool(
            task_id, "text", texts, labels, names, seed, params.val_fraction,
            params.test_fraction, {},
        )  # fmt: skip
    roles = [SPLIT_NAMES.get(str(v).strip().lower()) for v in frame[params.split_column]]
    bad = sorted(
        {str(v) for v, r in zip(frame[params.split_column], roles, strict=True) if r is None}
    )
    if bad:
        raise DataError(
            f"{path}: column {params.split_column!r} has value(s) {bad[:3]}; use train, val "
            "(or validation) and test"
        )
    if "train" not in roles:
        raise DataError(f"{path}: column {params.split_column!r} marks no row as train")
    given = {}
    for role in ("train", "val", "test"):
        idx = np.array([i for i, r in enumerate(roles) if r == role], dtype=np.int64)
        if len(idx):
            given[role] = Split([texts[i] for i in idx], labels[idx])
    return assemble_splits(
        task_id, "text", names, given, seed, params.val_fraction, params.test_fraction, {}
    )


@register_target("folder")
class FolderTarget(TargetKind[FolderParams]):
    """``folder: {path, image_size}``: images, one sub-folder per class or train/val/test."""

    Params = FolderParams

    @classmethod
    def modality(cls, params: FolderParams) -> str:
        return "image"

    @classmethod
    def content(cls, params: FolderParams) -> dict[str, Any]:
        root = Path(params.path).expanduser()
        files = [f for part in folder_layout(root).values() for f, _ in part]
        identity = params.model_dump(exclude={"path"})
        return {"folder": identity, "content": tree_digest(files, root)}

    @classmethod
    def load(cls, target_id: str, params: FolderParams, split_seed: int | None = None) -> TaskData:
        return load_folder(target_id, params, split_seed)


@register_target("csv")
class CSVTarget(TargetKind[CSVParams]):
    """``csv: {path, text_column, label_column, split_column}``: text classification rows."""

    Params = CSVParams

    @classmethod
    def modality(cls, params: CSVParams) -> str:
        return "text"

    @classmethod
    def content(cls, params: CSVParams) -> dict[str, Any]:
        path = Path(params.path).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: CSV file does not exist")
        return {"csv": params.model_dump(exclude={"path"}), "content": file_digest(path)}

    @classmethod
    def load(cls, target_id: str, params: CSVParams, split_seed: int | None = None) -> TaskData:
        return load_csv(target_id, params, split_seed)
