"""Frozen features of a (source, target, split): extracted once, cached on disk, shared by all.

Estimators, frozen-feature strategies and drift tests read the same cached matrices, so a
``(source, target)`` pair costs one forward pass over the target, ever. Entries are written
atomically with a checksum; a torn entry is recomputed, never trusted.

Extraction streams: the split's images stay compact (uint8, converted per batch on the device)
and each batch's features go straight into the entry's file, which is then read memory-mapped.
A 50,000-image target never holds its images and its features in memory at once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atlbench._cache import atomic_write_text, cache_dir, checksum_path, content_hash
from atlbench._digests import sha256_file
from atlbench.datapipe import NpyWriter, open_npy
from atlbench.sources._base import Encoder, Source
from atlbench.targets._base import Split, TaskData
from atlbench.train import PreparedSplit, autocast

FEATURES_VERSION = 3  # 3: text batched by length


@dataclass
class FeatureSet:
    """Pooled features (N, D) and, when the source has its own head, its softmax outputs."""

    features: np.ndarray
    probs: np.ndarray | None
    seconds: float


Sink = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], None]


@torch.inference_mode()
def stream_features(
    encoder: Encoder, split: Split, device: torch.device, sink: Sink, batch_size: int = 256
) -> float:
    """One batched forward pass in ``inference_mode``, streamed: the split stays compact
    (images uint8, converted per batch on the device) and each batch's float32 features (and
    source-head softmax) go to ``sink(rows, features, probs)`` at their split positions ``rows``.
    Returns the seconds it took; NaN/inf features raise :class:`FloatingPointError`."""
    encoder.eval().to(device)
    data = PreparedSplit(encoder, split)
    order = data.length_order()  # text: similar lengths per batch, less padding
    positions = order if order is not None else np.arange(len(data))
    done = bad = 0
    started = time.perf_counter()
    with autocast(device):
        rows = data.inference_batch(batch_size, device)
        for batch, _ in data.batches(rows, order, pin=device.type == "cuda"):
            f = encoder(data.to_model(batch, device)).float()
            logits = encoder.source_logits(f)
            probs = None
            if logits is not None:
                probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
            feats = f.cpu().numpy()
            bad += int((~np.isfinite(feats)).any(1).sum())
            sink(positions[done : done + len(feats)], feats, probs)
            done += len(feats)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    if bad:
        raise FloatingPointError(f"the source produced NaN/inf features for {bad} examples")
    return seconds


def extract(
    encoder: Encoder,
    split: Split,
    device: torch.device,
    batch_size: int = 256,
    into: tuple[Path, Path] | None = None,
) -> FeatureSet:
    """Features (and source probabilities) of ``split``: in-memory float32 arrays, or with
    ``into=(features_path, probs_path)`` streamed into that cache entry and memory-mapped."""
    if into is not None:
        return _extract_to_cache(encoder, split, device, *into, batch_size=batch_size)
    out: dict[str, np.ndarray | None] = {}

    def sink(rows: np.ndarray, feats: np.ndarray, probs: np.ndarray | None) -> None:
        if "features" not in out:
            out["features"] = np.empty((len(split), feats.shape[1]), dtype=np.float32)
            out["probs"] = None
            if probs is not None:
                out["probs"] = np.empty((len(split), probs.shape[1]), dtype=probs.dtype)
        out["features"][rows] = feats  # type: ignore[index]
        if probs is not None:
            out["probs"][rows] = probs  # type: ignore[index]

    seconds = stream_features(encoder, split, device, sink, batch_size)
    features = out.get("features")
    if features is None:
        features = np.zeros((0, int(encoder.feature_dim)), dtype=np.float32)
    return FeatureSet(features, out.get("probs"), seconds)


def _extract_to_cache(
    encoder: Encoder,
    split: Split,
    device: torch.device,
    f_path: Path,
    p_path: Path,
    batch_size: int = 256,
) -> FeatureSet:
    """Features streamed straight into the cache entry at ``f_path`` (probabilities at
    ``p_path``) and returned memory-mapped: they are never all in memory, and neither are the
    split's images. Commit order as in :class:`FeatureCache`: probabilities, side-car, features.
    """
    n = len(split)
    with contextlib.ExitStack() as stack:
        writers: dict[str, NpyWriter] = {}

        def sink(rows: np.ndarray, feats: np.ndarray, probs: np.ndarray | None) -> None:
            if "f" not in writers:
                shape = (n, feats.shape[1])
                writers["f"] = stack.enter_context(NpyWriter(f_path, shape, np.float32))
                if probs is not None:
                    shape = (n, probs.shape[1])
                    writers["p"] = stack.enter_context(NpyWriter(p_path, shape, probs.dtype))
            writers["f"].write_rows(rows, feats)
            if probs is not None:
                writers["p"].write_rows(rows, probs)

        seconds = stream_features(encoder, split, device, sink, batch_size)
        if "f" not in writers:  # an empty split: nothing worth a cache entry
            return extract(encoder, split, device, batch_size)
        if "p" in writers:
            _commit(writers["p"])
        meta = {"seconds": seconds, "has_probs": "p" in writers}
        atomic_write_text(_meta_path(f_path), json.dumps(meta))
        _commit(writers["f"])
    entry = _load_entry(f_path, p_path, n)
    assert entry is not None, f"{f_path}: just written, but not readable"
    return entry


def _commit(writer: NpyWriter) -> None:
    """Publish the file, then its checksum side-car (:func:`~atlbench._cache.checksum_path`)."""
    digest = writer.sha256()
    writer.commit()
    atomic_write_text(checksum_path(writer.path), digest)


def load_mapped(path: Path) -> np.ndarray | None:
    """A cached matrix, checksum verified, memory-mapped copy-on-write (a reader may change
    its copy; the file never changes); None if missing or corrupt."""
    try:
        expected = checksum_path(path).read_text().strip()
        if not path.exists() or sha256_file(path) != expected:
            return None
    except OSError:
        return None
    return open_npy(path, mode="c")


def encoder_identity(source: Source, init_seed: int | None) -> dict[str, object]:
    """The weights features come from: the source's, or a seeded random init of its arch."""
    if init_seed is None:
        return dict(source.fingerprint)
    return {"arch": source.arch, "init_seed": init_seed}


def build_encoder(source: Source, init_seed: int | None) -> Encoder:
    """The pre-trained encoder, or (``init_seed``) a random init that depends only on the seed."""
    if init_seed is None:
        return source.build(True)
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        return source.build(False)


def feature_paths(
    source: Source, task: TaskData, split: str, init_seed: int | None = None
) -> tuple[Path, Path]:
    key = content_hash(
        {
            "source": encoder_identity(source, init_seed),
            "target": task.fingerprint,
            "split": split,
            "v": FEATURES_VERSION,
        }
    )
    root = cache_dir() / "features"
    return root / f"{key}.features.npy", root / f"{key}.probs.npy"


class FeatureCache:
    """Process-local front of the on-disk cache; builds the pre-trained encoder only if needed.

    An entry is the probabilities (when the source has a head), a JSON side-car with the
    extraction time, and the features, written in that order: the features file is the commit
    marker, so an interrupted write is never mistaken for an entry without probabilities. Hits
    report the original extraction time, so a cell's cost does not depend on cache history.

    In memory it keeps the most recently used entries up to ``memory_mb`` (a study of many large
    pairs must not hold every matrix at once; plans run target by target, so recent entries are
    the ones asked for again) and the last encoder it built, so the three splits of a pair that all
    miss cost one model build, not three.
    """

    def __init__(self, device: torch.device, memory_mb: float = 2048.0) -> None:
        self.device = device
        self.memory_bytes = int(memory_mb * 2**20)
        self._memory: OrderedDict[str, FeatureSet] = OrderedDict()
        self._encoder: tuple[str, Encoder] | None = None

    def get(
        self,
        source: Source,
        task: TaskData,
        split: str,
        encoder: Encoder | None = None,
        init_seed: int | None = None,
    ) -> FeatureSet:
        """Features of ``split`` from the pre-trained source, or from its random-init twin
        seeded with ``init_seed``."""
        f_path, p_path = feature_paths(source, task, split, init_seed)
        if f_path.name in self._memory:
            self._memory.move_to_end(f_path.name)
            return self._memory[f_path.name]
        result = _load_entry(f_path, p_path, len(task.split(split)))
        if result is None:
            encoder = encoder if encoder is not None else self._build(source, init_seed)
            result = extract(encoder, task.split(split), self.device, into=(f_path, p_path))
        self._remember(f_path.name, result)
        return result

    def _build(self, source: Source, init_seed: int | None) -> Encoder:
        key = repr(encoder_identity(source, init_seed))
        if self._encoder is None or self._encoder[0] != key:
            self._encoder = None  # drop the previous model before building the next
            self._encoder = (key, build_encoder(source, init_seed))
        return self._encoder[1]

    def _remember(self, name: str, entry: FeatureSet) -> None:
        self._memory[name] = entry
        while len(self._memory) > 1 and self.resident_bytes() > self.memory_bytes:
            self._memory.popitem(last=False)

    def resident_bytes(self) -> int:
        """Bytes of the feature and probability matrices held in memory."""
        return sum(
            e.features.nbytes + (e.probs.nbytes if e.probs is not None else 0)
            for e in self._memory.values()
        )


def _meta_path(f_path: Path) -> Path:
    return f_path.with_name(f_path.name.replace(".features.npy", ".json"))


def _load_entry(f_path: Path, p_path: Path, n: int) -> FeatureSet | None:
    """A complete, verified cache entry, or None (then it is recomputed, never trusted)."""
    features = load_mapped(f_path)
    if features is None or len(features) != n:
        return None
    try:
        meta = json.loads(_meta_path(f_path).read_text())
        seconds = float(meta["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    probs = load_mapped(p_path) if meta.get("has_probs") else None
    if meta.get("has_probs") and (probs is None or len(probs) != n):
        return None
    return FeatureSet(features, probs, seconds)
