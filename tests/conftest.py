"""Test-wide settings: no hub access ever, and one throwaway cache for the whole session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Zoo weights and features land in a per-session cache, never in the user's ~/.cache."""
    if "ATLBENCH_TEST_CACHE" in os.environ:  # reuse across runs while developing
        os.environ["ATLBENCH_CACHE"] = os.environ["ATLBENCH_TEST_CACHE"]
    else:
        os.environ["ATLBENCH_CACHE"] = str(tmp_path_factory.mktemp("atlbench-cache"))


import copy  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import atlbench._components  # noqa: E402,F401  (the built-in components, as load_study has them)

# A small, fast study most integration tests start from: one tiny zoo source, one two-class
# digits target, short training with two trials. Tests change what they need with tiny_suite().
TINY_SUITE: dict[str, Any] = {
    "name": "tiny",
    "seeds": [0],
    "device": "cpu",
    "sources": [
        {
            "id": "zoo-digits",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 2,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        }
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe", "finetune", "scratch"],
    "budgets": [{"per_class": 4}],
    "estimators": ["logme"],
    "training": {"max_epochs": 2, "patience": 2, "trials": 2, "min_epoch_samples": 32},
}


def tiny_suite(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`TINY_SUITE` with top-level keys replaced (``training`` merged)."""
    suite = copy.deepcopy(TINY_SUITE)
    if "training" in changes:
        suite["training"] = suite["training"] | changes.pop("training")
    return suite | copy.deepcopy(changes)


class TensorSplit:
    """The slice of the PreparedSplit interface training uses, over plain tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.data, self.labels = x, y

    def __len__(self) -> int:
        return len(self.labels)

    def length_order(self) -> None:  # tensors have no padding to sort by
        return None

    def batches(  # type: ignore[no-untyped-def]
        self, batch_size: int, order: np.ndarray | None = None, pin: bool = False
    ):
        index = torch.as_tensor(order if order is not None else np.arange(len(self)))
        for start in range(0, len(index), batch_size):
            idx = index[start : start + batch_size]
            yield self.data[idx], self.labels[idx]

    def inference_batch(self, batch_size: int, device: torch.device) -> int:
        return batch_size

    def to_model(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        from atlbench.train import to_device

        return to_device(batch, device)
