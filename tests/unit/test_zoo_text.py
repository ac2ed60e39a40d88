"""The offline zoo's text encoder and the random-initialisation source (``zoo: {epochs: 0}``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from atlbench._source_task import source_accuracy
from atlbench.plan import BASELINE, build_plan
from atlbench.sources import zoo
from atlbench.sources.zoo import ZooParams, build_zoo, pretrain, pretrain_data
from atlbench.study import parse_study

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# small enough for a unit test (24 optimiser steps), hard enough to need learning (chance: 1/3)
RECIPE: dict[str, Any] = {
    "arch": "minilm",
    "layers": 1,
    "max_length": 32,
    "epochs": 6,
    "lr": 3e-3,
    "batch_size": 16,
    "pretrain_on": {"task": "topic_text", "classes": 3, "n_per_class": 40, "vocabulary": "first"},
}
RANDOM: dict[str, Any] = {"arch": "minilm", "layers": 1, "max_length": 32, "epochs": 0}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_text_zoo_pretrains_deterministically_learns_and_is_cached(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = ZooParams.model_validate(RECIPE | {"epochs": 1})  # determinism: two short runs
    monkeypatch.setenv("ATLBENCH_CACHE", str(tmp_path / "one"))
    digest = pretrain(short)["weights_sha256"]
    monkeypatch.setenv("ATLBENCH_CACHE", str(tmp_path / "two"))
    assert pretrain(short)["weights_sha256"] == digest
    params = ZooParams.model_validate(RECIPE)
    first = pretrain(params)
    assert first["val_acc"] >= 0.9 and first["test_acc"] >= 0.9  # it learnt its task

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached recipe was trained again")

    monkeypatch.setattr(zoo, "fit", no_training)
    assert pretrain(params)["weights_sha256"] == first["weights_sha256"]  # a cache hit
    encoder = build_zoo(params, pretrained=True)
    # the pre-training head came back with the backbone: its held-out accuracy is the recorded one
    acc = source_accuracy(encoder, pretrain_data(params), torch.device("cpu"))
    assert acc == pytest.approx(first["test_acc"])


def _study(*sources: dict[str, Any]) -> Any:
    return parse_study(
        {
            "name": "t",
            "seeds": [0, 1],
            "sources": list(sources),
            "targets": [{"id": "topics", "builtin": {"task": "topic_text", "classes": 3}}],
            "strategies": ["linear_probe", "scratch"],
            "budgets": [{"per_class": 5}],
        }
    )


def test_random_init_source_is_seeded_cached_and_shares_the_hf_architecture() -> None:
    hf = {"id": "minilm", "hf": {"model": MINILM, "pooling": "mean", "max_length": 32, "layers": 1}}
    study = _study(
        hf,
        {"id": "random", "zoo": RANDOM},
        {"id": "random-1", "zoo": RANDOM | {"seed": 1}},
    )
    rand, other, minilm = study.source("random"), study.source("random-1"), study.source("minilm")
    assert rand.pretrain_task is None and rand.modality == "text"
    assert rand.fingerprint != other.fingerprint
    weights = rand.build(True).state_dict()
    assert _same(weights, rand.build(True).state_dict())  # the seed fixes the weights
    assert not _same(weights, other.build(True).state_dict())
    assert not _same(weights, minilm.build(True).state_dict())
    assert rand.build(True).source_head() is None  # trained on nothing: no source classes
    # one architecture: the random init of the zoo and of the hf source are the same model, so
    # the plan gives the three sources one scratch baseline per seed, not three
    assert rand.arch == minilm.arch
    torch.manual_seed(7)
    scratch_hf = minilm.build(False).state_dict()
    torch.manual_seed(7)
    assert _same(scratch_hf, rand.build(False).state_dict())
    baselines = [c for c in build_plan(study).cells if c.role == BASELINE]
    assert len(baselines) == 2


def test_image_random_init_and_recipe_errors() -> None:
    image = _study({"id": "r", "zoo": {"arch": "test_resnet", "epochs": 0}}).source("r")
    assert image.modality == "image" and image.pretrain_task is None
    assert _same(image.build(True).state_dict(), image.build(True).state_dict())
    bad = [
        {"arch": "minilm", "epochs": 3},  # trained on what?
        RANDOM | {"pretrain_on": {"task": "topic_text"}},  # epochs 0 trains on nothing
        RECIPE | {"pretrain_on": {"task": "shapes"}},  # a text model on images
        {"arch": "test_resnet", "pretrain_on": "topic_text"},  # an image model on text
        {"arch": "test_resnet", "pretrain_on": "shapes", "layers": 2},  # text-only knob
    ]
    for recipe in bad:
        with pytest.raises(ValidationError):
            ZooParams.model_validate(recipe)
