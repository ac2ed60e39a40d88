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
from atlbench.train import PreparedSplit, autocast, to_device

FEATURES_VERSION = 3  # 3: text batched by length


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
    order = data.length_order()  # text: similar lengths per batch, less padding
    started = time.perf_counter()
    with autocast(device):
        for batch, _ in data.batches(batch_size, order):
            f = encoder(to_device(batch, device)).float()
            feats.append(f.cpu())
            logits = encoder.source_logits(f)
            if logits is not None:
                probs.append(torch.softmax(logits.float(), dim=1).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    features = _restore(torch.cat(feats).numpy().astype(np.float32), order)
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(1).sum())
        raise FloatingPointError(f"the source produced NaN/inf features for {bad} examples")
    prob = _restore(torch.cat(probs).numpy(), order) if probs else None
    return FeatureSet(features, prob, seconds)


def _restore(rows: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Rows computed in ``order`` back in split order."""
    if order is None:
        return rows
    out = np.empty_like(rows)
    out[order] = rows
    return out


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
            result = extract(encoder, task.split(split), self.device)
            if result.probs is not None:
                save_array(p_path, result.probs)
            meta = {"seconds": result.seconds, "has_probs": result.probs is not None}
            atomic_write_text(_meta_path(f_path), json.dumps(meta))
            save_array(f_path, result.features)
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
