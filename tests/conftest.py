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
