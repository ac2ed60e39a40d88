"""Compact inputs until the batch: the decoded-image cache, streamed batches, memory-mapped
features, and the same results as the in-memory path."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import atlbench.datapipe._stream as stream_module
import atlbench.targets.files as files_module
from atlbench._cache import cache_dir
from atlbench.datapipe import ImageRows, NpyWriter, decoded_images, image_batches, open_npy
from atlbench.targets._base import Split, TaskData
from atlbench.targets.files import FolderParams, load_folder, load_image

CPU = torch.device("cpu")


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every on-disk split streams through one DataLoader worker process."""
    monkeypatch.setenv("ATLBENCH_STREAM_MIN_BYTES", "0")
    monkeypatch.setenv("ATLBENCH_LOADER_WORKERS", "1")


def write_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 12) -> Path:
    """PNGs (lossless) whose class brightens one colour channel."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            x = rng.integers(0, 200, (size, size, 3), dtype=np.uint8)
            x[:, :, c] += 55
            Image.fromarray(x).save(root / f"c{c}" / f"{i:03d}.png")
    return root


def cached_files(cache: Path) -> list[Path]:
    return sorted((cache / "images").glob("*.npy"))


def disk_rows(images: np.ndarray) -> ImageRows:
    return decoded_images({"test": images.tobytes().hex()[:32]}, len(images), images.shape[1],
                          lambda i: images[i])  # fmt: skip


# --- the decoded-image cache --------------------------------------------------------------------


def test_a_folder_decodes_once_into_the_cache_and_again_when_its_content_changes(
    tmp_path: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "folder")
    params = FolderParams(path=str(root), image_size=12)
    task = load_folder("f", params)
    assert isinstance(task.train.inputs, ImageRows) and task.train.inputs.on_disk
    assert len(cached_files(own_cache)) == 1
    first = [np.asarray(task.split(s).inputs) for s in ("train", "val", "test")]
    reference = np.stack([load_image(root / "c1" / f"{i:03d}.png", 12) for i in range(12)])
    assert {r.tobytes() for r in reference} <= {r.tobytes() for s in first for r in s}

    decoded: list[Path] = []
    monkeypatch.setattr(
        files_module, "load_image", lambda p, s: decoded.append(p) or load_image(p, s)
    )
    again = load_folder("f", params)  # a hit: nothing decoded
    assert decoded == []
    for s, before in zip(("train", "val", "test"), first, strict=True):
        np.testing.assert_array_equal(np.asarray(again.split(s).inputs), before)

    from PIL import Image

    changed = root / "c1" / "000.png"
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(changed)
    edited = load_folder("f", params)
    assert len(decoded) == 36 and len(cached_files(own_cache)) == 2  # a new entry, rebuilt
    pixels = np.concatenate([np.asarray(edited.split(s).inputs) for s in ("train", "val", "test")])
    assert (pixels.reshape(len(pixels), -1).max(1) == 0).sum() == 1  # the edited image is read


def test_a_crash_mid_write_publishes_nothing_and_the_next_load_rebuilds(
    tmp_path: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "folder")
    params = FolderParams(path=str(root), image_size=12)
    real = files_module.load_image

    # 1. an error while decoding (a corrupt file, ctrl-c): the temp file is removed
    calls: list[int] = []

    def failing(path: Path, size: int) -> np.ndarray:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(files_module, "load_image", failing)
    with pytest.raises(KeyboardInterrupt):
        load_folder("f", params)
    images = own_cache / "images"
    assert cached_files(own_cache) == [] and list(images.glob(".*.tmp")) == []

    # 2. a hard kill (SIGKILL) of the writer half-way: a temp file is left, never published
    monkeypatch.setattr(files_module, "load_image", real)
    pid = os.fork()
    if pid == 0:  # the child decodes and is killed at the sixth image
        count = [0]

        def killed(path: Path, size: int) -> np.ndarray:
            count[0] += 1
            if count[0] == 6:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, size)

        files_module.load_image = killed  # type: ignore[assignment]
        try:
            load_folder("f", params)
        finally:
            os._exit(3)  # never reached: killed
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert cached_files(own_cache) == [] and len(list(images.glob(".*.tmp"))) == 1

    # the next load ignores the partial file and builds a whole one
    task = load_folder("f", params)
    (entry,) = cached_files(own_cache)
    assert open_npy(entry, (36, 12, 12, 3), np.uint8) is not None
    everything = sorted(real(f, 12).tobytes() for f in root.glob("c*/*.png"))
    got = sorted(r.tobytes() for s in ("train", "val", "test") for r in task.split(s).inputs)
    assert got == everything

    # a published file cut short (a disk error) is not trusted either: it is rebuilt
    entry.write_bytes(entry.read_bytes()[:-100])
    assert open_npy(entry, (36, 12, 12, 3), np.uint8) is None
    load_folder("f", params)
    assert open_npy(entry, (36, 12, 12, 3), np.uint8) is not None

    # a writer's stale temp file is swept by the next writer
    (stale,) = images.glob(".*.tmp")
    os.utime(stale, (0, 0))
    with NpyWriter(entry, (1, 1), np.uint8):
        pass  # left without commit: its own temp file goes too
    assert list(images.glob(".*.tmp")) == []


def test_a_hugging_face_image_dataset_is_decoded_row_by_row_into_the_cache_once(
    tmp_path: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    import atlbench.targets.hf as hf_module

    root = write_folder(tmp_path / "hf" / "train", classes=2, per_class=8, size=10)
    params = hf_module.HFDatasetParams(
        path="imagefolder", data_files={"train": str(root / "**")}, image_column="image",
        test_split=None, image_size=8,
    )  # fmt: skip
    task = hf_module.load_hf_dataset("h", params)
    assert isinstance(task.train.inputs, ImageRows) and task.train.inputs.on_disk
    got = sorted(r.tobytes() for s in ("train", "val", "test") for r in task.split(s).inputs)
    want = [np.asarray(Image.open(f).convert("RGB").resize((8, 8))) for f in root.glob("*/*")]
    assert got == sorted(w.tobytes() for w in want)
    decoded: list[int] = []
    real = hf_module._image
    monkeypatch.setattr(hf_module, "_image", lambda *a: decoded.append(1) or real(*a))
    again = hf_module.load_hf_dataset("h", params)
    assert decoded == [] and len(cached_files(own_cache)) == 1
    np.testing.assert_array_equal(np.asarray(again.test.inputs), np.asarray(task.test.inputs))


# --- streamed batches ---------------------------------------------------------------------------


def test_streamed_batches_are_the_in_memory_batches_in_the_callers_order(
    own_cache: Path, streamed: None
) -> None:
    images = np.random.default_rng(1).integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    rows = disk_rows(images)[np.arange(3, 50)]  # a view: nothing copied
    assert rows.on_disk and len(rows) == 47
    order = np.random.default_rng(2).permutation(47)
    chunks = [order[i : i + 8] for i in range(0, 47, 8)]
    streams: dict[bool, Any] = {}
    for _ in range(2):  # a second pass reuses the loader's workers
        got = list(image_batches(rows, chunks, False, streams))
        assert len(got) == len(chunks) and len(streams) == 1
        for batch, chunk in zip(got, chunks, strict=True):
            np.testing.assert_array_equal(batch.numpy(), images[3:][chunk])
    outer = image_batches(rows, chunks, False, streams)
    next(outer)  # a pass under way; a nested pass over the same rows is read in-process
    inner = [b.numpy() for b in image_batches(rows, chunks[:2], False, streams)]
    np.testing.assert_array_equal(np.concatenate(inner), images[3:][np.concatenate(chunks[:2])])
    assert len(list(outer)) == len(chunks) - 1


def test_features_come_back_identical_through_the_memory_mapped_cache(
    own_cache: Path, streamed: None
) -> None:
    import timm

    from atlbench._features import FeatureCache, extract
    from atlbench.sources._base import Source
    from atlbench.sources.timm import TimmEncoder

    def build(pretrained: bool) -> TimmEncoder:
        torch.manual_seed(0)
        return TimmEncoder(timm.create_model("test_resnet", num_classes=4), 16, True)

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    memory = Split(images[:30], np.arange(30) % 2)
    task = TaskData("t", "image", ["a", "b"], Split(disk_rows(images)[:30], memory.labels),
                    memory, memory, {"t": 1})  # fmt: skip
    source = Source("s", "test", "image", "a", {"memmap-test": 1}, builder=build)
    reference = extract(build(True), memory, CPU)  # in memory, no streaming
    got = FeatureCache(CPU).get(source, task, "train")  # streamed into the cache, mapped back
    assert isinstance(got.features, np.memmap) and isinstance(got.probs, np.memmap)
    np.testing.assert_array_equal(got.features, reference.features)
    np.testing.assert_array_equal(got.probs, reference.probs)
    reread = FeatureCache(CPU).get(source, task, "train")  # a fresh process-local cache: a hit
    np.testing.assert_array_equal(reread.features, reference.features)
    reread.features[0] = 0  # copy-on-write: a reader's change never reaches the file
    np.testing.assert_array_equal(FeatureCache(CPU).get(source, task, "train").features,
                                  reference.features)  # fmt: skip


# --- the same cell, in memory and streamed ------------------------------------------------------


def _sweep(root: Path, folder: Path, weights: Path) -> str:
    from conftest import tiny_suite

    import atlbench.targets._base as targets_base
    from atlbench.store import Store
    from atlbench.sweep import SweepOptions, run_sweep

    targets_base._LOADED.clear()  # each sweep loads its target afresh (as a new process would)
    source = {"arch": "test_resnet", "path": str(weights), "input_size": 16}
    suite = tiny_suite(
        name="same",
        sources=[{"id": "ckpt", "checkpoint": source}],
        targets=[{"id": "f", "folder": {"path": str(folder), "image_size": 12}}],
        strategies=[
            {"name": "linear_probe", "c_grid": [0.1, 10.0]},
            {"name": "finetune", "training": {"augment": "standard"}},
        ],
        training={"max_epochs": 2, "trials": 2, "min_epoch_samples": 16},
    )
    root.mkdir(parents=True)
    (root / "same.yaml").write_text(yaml.safe_dump(suite))
    options = SweepOptions(results_root=root / "r", reports_root=root / "rep", quiet=True)
    summary = run_sweep(root / "same.yaml", options)
    assert not summary.failed, summary.failed
    with Store(summary.results_dir) as store:
        records = store.records().sort_values("key")
        preds = [store.predictions(k) for k in records["key"]]
        estimates = store.estimates().sort_values(["key", "estimator", "source"])
    timing = [c for c in records.columns if c.endswith("_s") or "mem" in c or "created" in c]
    assert {"data_wait_s", "compute_time_s"} <= set(records.columns)
    rows = records.drop(columns=timing).to_dict("records")
    # JSON text: NaN (no forgetting measured) compares equal to NaN, floats to every bit
    return json.dumps([rows, preds, estimates["score"].tolist()], sort_keys=True, default=str)


def test_a_cell_gives_the_same_record_in_memory_and_memory_mapped_and_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm
    from safetensors.torch import save_file

    folder = write_folder(tmp_path / "folder", per_class=10)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(weights))

    def in_memory(root: Path, layout: dict[str, Any], size: int) -> dict[str, np.ndarray]:
        return {r: np.stack([load_image(f, size) for f, _ in fs]) for r, fs in layout.items()}

    with monkeypatch.context() as m:  # the in-memory path: the old loader, nothing on disk
        m.setenv("ATLBENCH_CACHE", str(tmp_path / "cache-a"))
        m.setattr(files_module, "folder_images", in_memory)
        memory = _sweep(tmp_path / "a", folder, weights)
        assert not (tmp_path / "cache-a" / "images").exists()
    monkeypatch.setenv("ATLBENCH_CACHE", str(tmp_path / "cache-b"))
    monkeypatch.setenv("ATLBENCH_STREAM_MIN_BYTES", "0")
    monkeypatch.setenv("ATLBENCH_LOADER_WORKERS", "1")
    loaders: list[int] = []
    start = stream_module.BatchStream.__init__
    monkeypatch.setattr(
        stream_module.BatchStream, "__init__", lambda *a: loaders.append(1) or start(*a)
    )
    mapped = _sweep(tmp_path / "b", folder, weights)
    assert cached_files(cache_dir())  # the folder was read from the decoded-image cache
    assert loaders  # and its batches came from DataLoader workers
    assert mapped == memory
