"""On-disk cache and file-system safety: cache location, atomic writes, safe file names."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Root of atlbench's cache (zoo weights, features); ``ATLBENCH_CACHE`` overrides it."""
    root = os.environ.get("ATLBENCH_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "atlbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_hash(obj: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able object (sorted keys), used for cell and cache keys."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, max_len: int = 80) -> str:
    """Turn a user-given id into a file name that cannot escape its directory.

    Path separators, ``..`` and other odd characters are replaced; a hash suffix keeps
    distinct ids distinct after sanitising.
    """
    cleaned = _UNSAFE.sub("_", name).strip("._") or "unnamed"
    if cleaned != name or len(cleaned) > max_len:
        cleaned = f"{cleaned[: max_len - 9]}-{content_hash(name, 8)}"
    return cleaned


@lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it).

    Linux reports it in ``/proc/self/status``; elsewhere a probe file created with mode 0o666
    shows which bits the umask clears.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    fd, probe = tempfile.mkstemp()
    os.close(fd)
    os.unlink(probe)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    fd = os.open(probe, flags, 0o666)
    try:
        return 0o666 & ~os.fstat(fd).st_mode
    finally:
        os.close(fd)
        os.unlink(probe)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename: never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def checksum_path(path: Path) -> Path:
    """The sha256 side-car of a cached file: written after the file, so a torn entry (file
    without a matching side-car) is detected and recomputed, never trusted."""
    return path.with_suffix(path.suffix + ".sha256")
