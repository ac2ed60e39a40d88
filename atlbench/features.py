"""Frozen features of a (source, target, split): extracted once, cached on disk, shared by all.

Estimators, frozen-feature strategies and drift tests read the same cached matrices, so a
``(source, target)`` pair costs one forward pass over the target, ever. Entries are written
atomically with a checksum; a torn entry is recomputed, never trusted.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atlbench.cache import atomic_write_text, cache_dir, content_hash, load_array, save_array
from atlbench.sources.base import Encoder, Source
from atlbench.targets.base import Split, TaskData
from atlbench.train import PreparedSplit, _autocast, _to_device

FEATURES_VERSION = 2  # 2: JSON side-car with the extraction time


@dataclass
class FeatureSet:
    """Pooled features (N, D) and, when the source has its own head, its softmax outputs."""

    features: np.ndarray
    probs: np.ndarray | None
    seconds: float


@torch.inference_mode()
def extract(
    encoder: Encoder, split: Split, device: torch.device, batch_size: int = 256
) -> FeatureSet:
    """One batched forward pass in ``inference_mode``; float32 features on the CPU."""
    encoder.eval().to(device)
    data = PreparedSplit(encoder, split)
    feats, probs = [], []
    started = time.perf_counter()
    with _autocast(device):
        for batch, _ in data.batches(batch_size):
            f = encoder(_to_device(batch, device)).float()
            feats.append(f.cpu())
            logits = encoder.source_logits(f)
            if logits is not None:
                probs.append(torch.softmax(logits.float(), dim=1).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    features = torch.cat(feats).numpy().astype(np.float32)
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(1).sum())
        raise FloatingPointError(f"the source produced NaN/inf features for {bad} examples")
    return FeatureSet(features, torch.cat(probs).numpy() if probs else None, seconds)


def feature_paths(source: Source, task: TaskData, split: str) -> tuple[Path, Path]:
    key = content_hash(
        {
            "source": source.fingerprint,
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
        self, source: Source, task: TaskData, split: str, encoder: Encoder | None = None
    ) -> FeatureSet:
        f_path, p_path = feature_paths(source, task, split)
        if f_path.name in self._memory:
            self._memory.move_to_end(f_path.name)
            return self._memory[f_path.name]
        result = _load_entry(f_path, p_path, len(task.split(split)))
        if result is None:
            encoder = encoder if encoder is not None else self._build(source)
            result = extract(encoder, task.split(split), self.device)
            if result.probs is not None:
                save_array(p_path, result.probs)
            meta = {"seconds": result.seconds, "has_probs": result.probs is not None}
            atomic_write_text(_meta_path(f_path), json.dumps(meta))
            save_array(f_path, result.features)
        self._remember(f_path.name, result)
        return result

    def _build(self, source: Source) -> Encoder:
        key = repr(source.fingerprint)
        if self._encoder is None or self._encoder[0] != key:
            self._encoder = None  # drop the previous model before building the next
            self._encoder = (key, source.build(True))
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
    features = load_array(f_path)
    if features is None or len(features) != n:
        return None
    try:
        meta = json.loads(_meta_path(f_path).read_text())
        seconds = float(meta["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    probs = load_array(p_path) if meta.get("has_probs") else None
    if meta.get("has_probs") and (probs is None or len(probs) != n):
        return None
    return FeatureSet(features, probs, seconds)
