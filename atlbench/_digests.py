"""Content digests of user files (datasets, checkpoints), memoised by their stat.

Cell keys must follow the *content* of the data and weights: relabelling a CSV must re-run its
cells, and ``touch`` must not. Hashing a large folder on every plan would be slow, so each digest
is memoised on disk under a key made of the file's path, size, mtime, ctime and inode. ``touch``
changes the mtime, so the file is hashed again and gets the same digest (nothing re-runs); a
rewrite that restores size and mtime still changes the ctime, which no user call can set, so the
new content is noticed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from atlbench._cache import atomic_write_text, cache_dir, content_hash

_CHUNK = 1 << 20


def _stat_key(path: Path) -> list[object]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _memo(key: object) -> Path:
    return cache_dir() / "digests" / f"{content_hash(key, 32)}.txt"


def _remembered(key: object) -> str | None:
    try:
        text = _memo(key).read_text().strip()
    except OSError:
        return None
    return text if len(text) == 64 else None


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks (a large file is never held in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (memoised by stat)."""
    path = Path(path)
    key = ["file", *_stat_key(path)]
    digest = _remembered(key)
    if digest is None:
        digest = sha256_file(path)
        atomic_write_text(_memo(key), digest)
    return digest


def tree_digest(files: Iterable[Path], root: Path) -> str:
    """One digest over files' names relative to ``root`` and their contents.

    The whole tree is memoised by the list of stats, so an unchanged folder of thousands of
    images costs one ``stat`` per file, not a read.
    """
    ordered = sorted(Path(f) for f in files)
    stats = [[str(f.relative_to(root)), *_stat_key(f)[1:]] for f in ordered]
    key = ["tree", str(root.resolve()), stats]
    digest = _remembered(key)
    if digest is None:
        h = hashlib.sha256()
        for f, st in zip(ordered, stats, strict=True):
            h.update(str(st[0]).encode())
            h.update(bytes.fromhex(file_digest(f)))
        digest = h.hexdigest()
        atomic_write_text(_memo(key), digest)
    return digest
