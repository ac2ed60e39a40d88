"""The in-process feature cache: one model build per pair, bounded memory, exact reloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import atlbench._features as features_module
from atlbench._features import FeatureCache, extract
from atlbench.sources._base import Encoder, Source
from atlbench.targets._base import Split, TaskData

CPU = torch.device("cpu")


def tiny_task(seed: int) -> TaskData:
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 2)

    return TaskData("t", "image", ["a", "b"], split(24), split(10), split(12), {"seed": seed})


def counting_source(builds: list[int]) -> Source:
    import timm

    from atlbench.sources.timm import TimmEncoder

    def build(pretrained: bool) -> Encoder:
        builds.append(1)
        torch.manual_seed(0)
        return TimmEncoder(timm.create_model("test_resnet", num_classes=0), 32, False)

    return Source("s", "test", "image", "a", {"feature-cache-test": 1}, builder=build)


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATLBENCH_CACHE", str(tmp_path))
    return tmp_path


def test_three_missing_splits_cost_one_build_and_match_a_direct_extraction(own_cache) -> None:
    builds: list[int] = []
    source, task = counting_source(builds), tiny_task(0)
    cache = FeatureCache(CPU)
    got = {split: cache.get(source, task, split).features for split in ("train", "val", "test")}
    assert len(builds) == 1
    reference = source.build(True)
    for split, features in got.items():
        np.testing.assert_array_equal(features, extract(reference, task.split(split), CPU).features)
    # a second target of the same source still reuses the model
    cache.get(source, tiny_task(1), "train")
    assert len(builds) == 2  # the one above, for the reference, is the only other build


def test_memory_is_bounded_and_evicted_entries_reload_from_disk(
    own_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[int] = []
    source, task = counting_source(builds), tiny_task(2)
    one_entry_mb = FeatureCache(CPU).get(source, task, "train").features.nbytes / 2**20
    cache = FeatureCache(CPU, memory_mb=1.5 * one_entry_mb)
    first = cache.get(source, task, "train").features
    for split in ("val", "test"):
        cache.get(source, task, split)
        assert cache.resident_bytes() <= cache.memory_bytes
    calls: list[int] = []
    real = features_module.extract
    monkeypatch.setattr(
        features_module, "extract", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = cache.get(source, task, "train").features  # evicted: read back, not re-extracted
    assert calls == [] and again is not first
    np.testing.assert_array_equal(again, first)
