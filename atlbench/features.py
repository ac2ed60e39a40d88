"""Frozen features of a (source, target, split): extracted once, cached on disk, shared by all.

Estimators, frozen-feature strategies and drift tests read the same cached matrices, so a
``(source, target)`` pair costs one forward pass over the target, ever. Entries are written
atomically with a checksum; a torn entry is recomputed, never trusted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atlbench.cache import cache_dir, content_hash, load_array, save_array
from atlbench.sources.base import Encoder, Source
from atlbench.targets.base import Split, TaskData
from atlbench.train import PreparedSplit, _autocast, _to_device

FEATURES_VERSION = 1


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
    """Process-local front of the on-disk cache; builds the pre-trained encoder only if needed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._memory: dict[tuple[str, str], FeatureSet] = {}

    def get(
        self, source: Source, task: TaskData, split: str, encoder: Encoder | None = None
    ) -> FeatureSet:
        f_path, p_path = feature_paths(source, task, split)
        mem_key = (f_path.name, split)
        if mem_key in self._memory:
            return self._memory[mem_key]
        features = load_array(f_path)
        probs = load_array(p_path) if p_path.exists() else None
        if features is not None and len(features) == len(task.split(split)):
            result = FeatureSet(features, probs, 0.0)
        else:
            encoder = encoder if encoder is not None else source.build(True)
            result = extract(encoder, task.split(split), self.device)
            save_array(f_path, result.features)
            if result.probs is not None:
                save_array(p_path, result.probs)
        self._memory[mem_key] = result
        return result
