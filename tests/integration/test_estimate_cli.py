"""``atlbench estimate``: rank sources from frozen features in seconds, no fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from atlbench._estimate import rank_sources
from atlbench.errors import AtlbenchError, SuiteError
from atlbench.estimators import logme

SUITE = {
    "name": "est",
    "seeds": [0],
    "device": "cpu",
    "sources": [
        {
            "id": "digits-src",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 2,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        },
        {
            "id": "texture-src",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 2,
                "pretrain_on": {"task": "textures", "n_per_class": 20},
            },
        },
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe"],
    "estimators": ["logme", "leep", "hscore"],
}


@pytest.fixture(scope="module")
def suite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("est") / "est.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def test_ranks_every_source_with_every_estimator_and_baseline(suite_path: Path) -> None:
    frame = rank_sources(suite_path)
    names = {"logme", "leep", "hscore", "baseline_params"}
    assert set(frame["estimator"]) == names
    assert set(frame["source"]) == {"digits-src", "texture-src"}
    for _, grp in frame.groupby("estimator"):
        scores = grp["score"].to_numpy(dtype=float)
        ranks = grp["rank"].to_numpy(dtype=int)
        # rank 1 is the highest score
        assert ranks[np.argmax(scores)] == 1
    # the stored LogME equals LogME recomputed on the cached train features
    import torch

    from atlbench._features import FeatureCache
    from atlbench.study import load_study

    study = load_study(suite_path)
    task = study.target("d56").load()
    fs = FeatureCache(torch.device("cpu")).get(study.source("digits-src"), task, "train")
    row = frame[(frame["estimator"] == "logme") & (frame["source"] == "digits-src")].iloc[0]
    assert row["score"] == pytest.approx(logme(fs.features, task.train.labels), rel=1e-9)


def test_unknown_target_or_estimator_is_one_clear_line(suite_path: Path) -> None:
    with pytest.raises(AtlbenchError, match="no target 'd57'"):
        rank_sources(suite_path, "d57")
    with pytest.raises(SuiteError, match="unknown estimator 'logmee'"):
        rank_sources(suite_path, estimators=["logmee"])
