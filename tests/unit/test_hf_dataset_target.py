"""Hugging Face ``datasets`` targets from local files (no hub): splits, label mapping, no leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atlbench.errors import DataError
from atlbench.targets.hf import HFDatasetParams, load_hf_dataset


def write_csv(path: Path, labels: list) -> None:
    rows = ["text,label"] + [
        f"example number {i} about topic {lab},{lab}" for i, lab in enumerate(labels)
    ]
    path.write_text("\n".join(rows) + "\n")


def test_missing_test_split_is_carved_from_train_not_reused_from_val(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", ["a", "b", "c"] * 20)
    params = HFDatasetParams(
        path="csv",
        data_files={"train": str(tmp_path / "train.csv")},
        text_column="text",
        test_split=None,
        val_fraction=0.2,
        test_fraction=0.25,
    )
    task = load_hf_dataset("t", params)
    texts = [set(task.split(s).inputs) for s in ("train", "val", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(len(t) for t in texts) == 60
    assert len(task.test) == 15 and len(task.val) == 12  # 5 and 4 of each of 3 classes
    assert task.class_names == ["a", "b", "c"]
    for split in ("train", "val", "test"):  # labels still describe their texts
        s = task.split(split)
        for text, label in zip(s.inputs, s.labels, strict=True):
            assert text.endswith(task.class_names[label])


def test_integer_labels_are_made_contiguous_across_splits(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", [1, 2, 5] * 10)
    write_csv(tmp_path / "test.csv", [5, 1, 2] * 3)
    params = HFDatasetParams(
        path="csv",
        text_column="text",
        data_files={"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")},
    )
    task = load_hf_dataset("t", params)
    assert task.class_names == ["1", "2", "5"]  # no empty classes 0, 3, 4
    assert np.bincount(task.test.labels).tolist() == [3, 3, 3]
    assert np.bincount(np.concatenate([task.train.labels, task.val.labels])).tolist() == [10] * 3


def test_single_class_is_a_clear_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", ["a"] * 10)
    params = HFDatasetParams(
        path="csv", data_files=str(tmp_path / "train.csv"), text_column="text", test_split=None
    )
    with pytest.raises(DataError, match="only one class"):
        load_hf_dataset("t", params)
