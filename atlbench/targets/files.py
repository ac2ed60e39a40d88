"""User data on disk: image folders (one sub-folder per class) and CSV text/label files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atlbench.errors import DataError
from atlbench.targets.base import TaskData, encode_labels, from_single_pool

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class FolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    image_size: int = Field(64, ge=8, le=1024)
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.3, gt=0, lt=0.6)


class CSVParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    text_column: str = "text"
    label_column: str = "label"
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.3, gt=0, lt=0.6)
    encoding: str = "utf-8"


def _digest(paths: list[Path]) -> str:
    """Content hash of files so the cache notices edited data, not just renamed paths."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def load_image(path: Path, size: int) -> np.ndarray:
    """Any image mode or size -> uint8 RGB ``size x size``; corrupt files name themselves."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__})") from None


def load_folder(task_id: str, params: FolderParams) -> TaskData:
    root = Path(params.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{root}: needs one sub-folder per class, found {len(class_dirs)}")
    files: list[Path] = []
    raw_labels: list[str] = []
    for d in class_dirs:
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                raw_labels.append(d.name)
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = np.stack([load_image(f, params.image_size) for f in files])
    labels, names = encode_labels(raw_labels, str(root))
    return from_single_pool(
        task_id,
        "image",
        images,
        labels,
        names,
        params.seed,
        params.val_fraction,
        params.test_fraction,
        {"folder": params.model_dump(), "content": _digest(files)},
    )


def load_csv(task_id: str, params: CSVParams) -> TaskData:
    import pandas as pd

    path = Path(params.path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: CSV file does not exist")
    try:
        frame = pd.read_csv(path, encoding=params.encoding)
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not valid {params.encoding} text; set `encoding:` (e.g. latin-1)"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    for column in (params.text_column, params.label_column):
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))}); "
                "set text_column/label_column"
            )
    texts: list[Any] = frame[params.text_column].tolist()
    if any(not isinstance(t, str) for t in texts):
        raise DataError(f"{path}: column {params.text_column!r} has empty or non-text rows")
    labels, names = encode_labels(frame[params.label_column].tolist(), str(path))
    return from_single_pool(
        task_id,
        "text",
        texts,
        labels,
        names,
        params.seed,
        params.val_fraction,
        params.test_fraction,
        {"csv": params.model_dump(), "content": _digest([path])},
    )
