"""Cell keys follow the content of data and weights: edit a dataset and exactly its cells re-run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from conftest import tiny_suite

from atlbench.sweep import SweepOptions, run_sweep


def write_csv(path: Path, flip: bool = False, offset: int = 0) -> None:
    words = ["goal match striker keeper", "bank shares market rates"]
    rows = ["text,label"]
    for i in range(offset, offset + 24):
        label = i % 2
        rows.append(f"{words[label]} number {i},{1 - label if flip else label}")
    path.write_text("\n".join(rows) + "\n")


def sweep(path: Path, root: Path) -> Any:
    options = SweepOptions(results_root=root / "results", reports_root=root / "reports", quiet=True)
    return run_sweep(path, options)


def test_relabelling_a_csv_reruns_exactly_its_cells(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv")
    write_csv(tmp_path / "b.csv", offset=100)
    suite = tiny_suite(
        sources=[{"id": "minilm",
                  "hf": {"model": "sentence-transformers/all-MiniLM-L6-v2", "max_length": 16}}],
        targets=[{"id": "a", "csv": {"path": str(tmp_path / "a.csv")}},
                 {"id": "b", "csv": {"path": str(tmp_path / "b.csv")}}],
        strategies=["knn"], estimators=[],
    )  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    first = sweep(path, tmp_path)
    per_target = {t: sum(c.target == t for c in first.plan.cells) for t in ("a", "b")}
    assert first.ran == len(first.plan.cells) == 2 * per_target["a"]
    os.utime(tmp_path / "a.csv")  # touching changes nothing
    assert sweep(path, tmp_path).ran == 0
    write_csv(tmp_path / "a.csv", flip=True)  # same texts, every label flipped
    again = sweep(path, tmp_path)
    assert again.ran == per_target["a"]
    assert {
        c.target for c in again.plan.cells if c.key not in {k.key for k in first.plan.cells}
    } == {"a"}


def test_a_rewritten_checkpoint_reruns_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from atlbench.sources.timm import create_timm

    def weights(seed: int) -> None:
        torch.manual_seed(seed)
        state = create_timm("test_resnet", False, num_classes=0, input_size=32).model.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))

    weights(0)
    stat = (tmp_path / "w.safetensors").stat()
    suite = tiny_suite(
        sources=[{"id": "ck", "checkpoint": {"arch": "test_resnet", "input_size": 32,
                                             "path": str(tmp_path / "w.safetensors")}}],
        strategies=["knn"], estimators=[],
    )  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    first = sweep(path, tmp_path)
    assert first.ran > 0
    os.utime(tmp_path / "w.safetensors")
    assert sweep(path, tmp_path).ran == 0
    weights(1)  # other weights, then the old size and mtime restored
    assert (tmp_path / "w.safetensors").stat().st_size == stat.st_size
    os.utime(tmp_path / "w.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    transfer = sum(c.role == "transfer" for c in first.plan.cells)
    assert sweep(path, tmp_path).ran == transfer  # the random-init twins do not read the weights
