"""Frozen-prefix caching is exact: the cached and the full forward pass select and predict alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from atlbench._frozen_prefix import frozen_blocks
from atlbench.protocol import TrainingConfig
from atlbench.targets._base import Split, TaskData

TOPICS = {
    "sport": "goal match striker keeper league cup final referee",
    "money": "bank shares market rates stocks investors profit loans",
    "tech": "chip software laptop battery processor update code server",
}


def text_task(seed: int = 0) -> TaskData:
    rng = np.random.default_rng(seed)
    words = {k: v.split() for k, v in TOPICS.items()}

    def split(n: int) -> Split:
        y = np.repeat(np.arange(3), n)
        texts = [" ".join(rng.choice(words[list(TOPICS)[c]], size=rng.integers(3, 9))) for c in y]
        return Split(texts, y)

    return TaskData("t", "text", list(TOPICS), split(6), split(3), split(4))


def test_frozen_blocks_counts_the_leading_frozen_blocks() -> None:
    a, b, c, stem, norm = (nn.Parameter(torch.zeros(1)) for _ in range(5))
    named = [("stem.w", stem), ("b0.w", a), ("b1.w", b), ("b2.w", c), ("norm.w", norm)]
    blocks = ["b0", "b1", "b2"]
    assert frozen_blocks(blocks, named, {id(c), id(norm)}) == 2
    assert frozen_blocks(blocks, named, {id(norm)}) == 2  # a final norm goes with the last block
    assert frozen_blocks(blocks, named, {id(stem)}) == 0  # a stem goes with the first block
    assert frozen_blocks(blocks, named, set()) == 3


@pytest.mark.parametrize("layers", [2, "head"])
def test_cached_prefix_gives_the_same_selection_and_logits(layers: object) -> None:
    from test_strategies import context, run

    from atlbench.sources.hf import HFParams, create_hf

    params = HFParams(model="sentence-transformers/all-MiniLM-L6-v2", max_length=16)
    task = text_task()
    cfg = TrainingConfig(
        max_epochs=2, patience=2, batch_size=6, trials=2, warmup_epochs=0, min_epoch_samples=18
    )
    import atlbench.tuning as tuning

    captured: list[np.ndarray] = []
    real = tuning.predict_logits

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        logits = real(*a, **k)
        captured.append(logits)
        return logits

    outs = {}
    for cached in (True, False):
        training = cfg.model_copy(update={"prefix_cache": cached})
        encoder = create_hf(params, True)  # fresh pre-trained weights for each path
        ctx = context(task, encoder, "finetune", training=training, layers=layers)
        tuning.predict_logits = spy
        try:
            outs[cached] = (run(ctx, "finetune"), captured[-1])
        finally:
            tuning.predict_logits = real
    (fast, fast_logits), (slow, slow_logits) = outs[True], outs[False]
    assert fast.cost.prefix_cache is not None
    assert fast.cost.prefix_cache.startswith("exact: embeddings + ")
    assert slow.cost.prefix_cache == "off: prefix_cache is false"
    assert fast.hparams == slow.hparams  # the same trial wins
    for a, b in zip(fast.trials, slow.trials, strict=True):
        assert a["val_acc"] == b["val_acc"] and a["epochs"] == b["epochs"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(fast_logits, slow_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(fast.test_pred, slow.test_pred)
    assert fast.trainable_params == slow.trainable_params


def test_truncated_encoder_matches_the_full_models_hidden_state() -> None:
    """``hf: {layers: 3}`` is the first 3 layers of the real model: its last hidden state equals
    the full model's ``hidden_states[3]`` (transformers' own output, an independent reference)."""
    from atlbench.sources.hf import HFParams, create_hf

    name = "sentence-transformers/all-MiniLM-L6-v2"
    full = create_hf(HFParams(model=name, max_length=16), pretrained=True)
    short = create_hf(HFParams(model=name, max_length=16, layers=3), pretrained=True)
    batch = full.tokenizer(["goal match striker", "bank shares market rates"], padding=True,
                           return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        want = full.model(**batch, output_hidden_states=True).hidden_states[3]
        got = short.model(**batch).last_hidden_state
    assert len(short.model.encoder.layer) == 3 and short.model.config.num_hidden_layers == 3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="only 6"):
        create_hf(HFParams(model=name, layers=7), pretrained=True)
