"""Prompt tuning, prefix tuning, (IA)^3 and VPT: what each trains, checked against independent
counts and hand-written references, on the offline MiniLM and timm's ``test_vit``."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from test_strategies import check_outcome, context, image_task, run, timm_encoder

from atlbench.protocol import TrainingConfig
from atlbench.registry import STRATEGIES
from atlbench.sources._base import Encoder
from atlbench.strategies import CellOutcome
from atlbench.targets._base import Split, TaskData

TINY = TrainingConfig(max_epochs=1, trials=1, min_epoch_samples=16, batch_size=6)
SENTENCES = [
    "the striker scored a late goal",
    "a tense match ended in a draw",
    "the keeper saved it",
    "the team won the cup final",
    "stocks fell sharply today",
    "the bank raised rates",
    "markets rallied after the report",
    "investors sold their shares",
    "the new phone has a chip",
    "software update fixes bugs",
    "the laptop battery lasts long",
    "a faster processor ships",
]


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    from atlbench.sources.hf import HFParams, create_hf

    model = "sentence-transformers/all-MiniLM-L6-v2"
    return create_hf(HFParams(model=model, max_length=16), True)


@pytest.fixture(scope="module")
def vit() -> Encoder:
    return timm_encoder("test_vit")


def text_task() -> TaskData:
    y = np.repeat(np.arange(3), 4)
    x = SENTENCES
    return TaskData(
        "t", "text", ["sport", "money", "tech"], Split(x, y),
        Split(x[::2], y[::2]), Split(x[1::2], y[1::2]),
    )  # fmt: skip


def train(encoder: Encoder, strategy: str, seed: int = 0, **params: Any) -> CellOutcome:
    task = text_task() if encoder.modality == "text" else image_task()
    ctx = context(task, encoder, strategy, training=TINY, **params)
    ctx.seed = seed
    out = run(ctx, strategy)
    check_outcome(out, task)
    # what training started from
    out.strategy_facts["initial"] = STRATEGIES.get(strategy)().encoder(ctx)
    return out


def head_size(encoder: Encoder, classes: int = 3) -> int:
    return encoder.feature_dim * classes + classes


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def ia3_expected(encoder: Encoder) -> tuple[set[str], int]:
    """The modules (IA)^3 should adapt and its vector sizes, from the architecture by hand: keys
    and values (output sized) and the feed-forward down-projection (input sized) per block."""
    model = encoder.model
    if encoder.modality == "text":
        cfg = model.config
        per = [("attention.self.key", cfg.hidden_size), ("attention.self.value", cfg.hidden_size),
               ("output.dense", cfg.intermediate_size)]  # fmt: skip
        names = {f"encoder.layer.{i}.{m}": n for i in range(cfg.num_hidden_layers) for m, n in per}
    else:
        dim, hidden = model.embed_dim, model.blocks[0].mlp.fc2.in_features
        names = {}
        for i in range(len(model.blocks)):  # fused q/k/v: all 3 * dim outputs are rescaled
            names |= {f"blocks.{i}.attn.qkv": 3 * dim, f"blocks.{i}.mlp.fc2": hidden}
    return set(names), sum(names.values())


def own_params(encoder: Encoder, strategy: str, **p: Any) -> int:
    """What each strategy should train besides the head, counted from the architecture."""
    if strategy == "prompt_tuning":
        return p["n_tokens"] * encoder.model.config.hidden_size
    if strategy == "prefix_tuning":  # a key and a value per virtual token, in every layer
        cfg = encoder.model.config
        return p["n_tokens"] * cfg.num_hidden_layers * 2 * cfg.hidden_size
    if strategy == "vpt":
        return p["n_tokens"] * encoder.model.embed_dim
    return ia3_expected(encoder)[1]


def trained_part(encoder: Encoder | None, strategy: str) -> dict[str, torch.Tensor]:
    """An encoder's own parameters (prompts, prefixes or vectors)."""
    assert encoder is not None
    return {
        k: v.detach().clone()
        for k, v in encoder.named_parameters()
        if ("ia3_l" in k if strategy == "ia3" else not k.startswith("model."))
    }


def frozen_part(out: CellOutcome, strategy: str) -> dict[str, torch.Tensor]:
    """The trained encoder's backbone weights, under the source encoder's keys."""
    assert out.encoder is not None
    items = out.encoder.state_dict().items()
    if strategy == "ia3":
        return {k.replace(".base_layer", ""): v for k, v in items if "ia3_l" not in k}
    return {k: v for k, v in items if k.startswith("model.")}


CASES = [
    ("prompt_tuning", "minilm", {"n_tokens": 4}),
    ("prefix_tuning", "minilm", {"n_tokens": 3}),
    ("ia3", "minilm", {}),
    ("ia3", "vit", {}),
    ("vpt", "vit", {"n_tokens": 5}),
]


@pytest.mark.parametrize(("strategy", "source", "params"), CASES)
def test_trains_only_its_own_parameters_deterministically(
    strategy: str, source: str, params: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    encoder = request.getfixturevalue(source)
    before = state(encoder)
    out = train(encoder, strategy, **params)
    assert out.trainable_params == own_params(encoder, strategy, **params) + head_size(encoder)
    assert_same(frozen_part(out, strategy), before)  # the backbone is bit-identical
    assert_same(state(encoder), before)  # and the cached source encoder untouched
    assert out.encoder is not encoder
    trained = trained_part(out.encoder, strategy)
    initial = trained_part(out.strategy_facts["initial"], strategy)
    assert trained.keys() == initial.keys()
    assert all(not torch.equal(trained[k], initial[k]) for k in trained)  # and they did train

    again = train(encoder, strategy, **params)
    np.testing.assert_array_equal(again.test_pred, out.test_pred)
    assert_same(trained_part(again.encoder, strategy), trained)
    if strategy != "ia3":  # the seed draws the initial prompt: another seed, another prompt
        other = trained_part(train(encoder, strategy, seed=1, **params).encoder, strategy)
        assert all(not torch.equal(v, trained[k]) for k, v in other.items())


def test_ia3_targets_keys_values_and_feedforward_and_merges_on_export(
    minilm: Encoder, vit: Encoder, tmp_path
) -> None:
    from safetensors.torch import load_file

    from atlbench.strategies.ia3 import IA3Params, inject_ia3, merged_copy

    for encoder, rule in ((minilm, "attention key/value + feed-forward"),
                          (vit, "attention qkv + feed-forward")):  # fmt: skip
        names, _ = ia3_expected(encoder)
        adapted, targets, ff, got_rule = inject_ia3(encoder, IA3Params())
        assert set(targets) == names and got_rule == rule
        assert set(ff) == {n for n in names if n.endswith(("output.dense", "mlp.fc2"))}
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, prm in adapted.named_parameters():
                if "ia3_l" in name:
                    prm.copy_(1 + 0.3 * torch.randn(prm.shape, generator=gen))
        merged = merged_copy(adapted).eval()
        assert merged.state_dict().keys() == encoder.state_dict().keys()
        batch = encoder.prepare(
            SENTENCES[:3] if encoder.modality == "text" else image_task().test.inputs[:3]
        )
        with torch.no_grad():
            want, got, plain = adapted.eval()(batch), merged(batch), encoder.eval()(batch)
        assert not torch.allclose(want, plain, atol=1e-3)  # the vectors changed the function
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    ctx = context(image_task(), vit, "ia3", training=TINY)
    ctx.checkpoint_dir = tmp_path
    out = run(ctx, "ia3")
    saved = load_file(str(tmp_path / "best.safetensors"))
    plain = copy.deepcopy(vit)
    plain.load_state_dict(saved, strict=True)  # loads where the source model does
    x = vit.prepare(image_task().test.inputs)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), out.encoder.eval()(x), rtol=1e-4, atol=1e-5)


def test_prompt_tuning_matches_the_plain_model_on_token_prompts(minilm: Encoder) -> None:
    """A prompt made of real tokens' word embeddings is those tokens: the prompted encoder must
    give the plain model's hidden states on ``[tokens; input]``, pooled over the input only."""
    from atlbench.strategies.prompt import PromptTunedTextEncoder

    model = minilm.model.eval()
    tokens = torch.tensor([2054, 2003, 1996])  # three ordinary word pieces
    prompt = model.get_input_embeddings().weight[tokens].detach()
    batch = minilm.prepare(SENTENCES[:4])  # different lengths: padding in the batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n = len(tokens)
    joined = torch.cat([tokens.expand(len(ids), -1), ids], 1)
    with torch.no_grad():
        hidden = model(
            input_ids=joined, attention_mask=torch.cat([torch.ones_like(ids[:, :n]), mask], 1)
        ).last_hidden_state
    real = hidden[:, n:]
    w = mask.unsqueeze(-1).float()
    for pooling, want in (("mean", (real * w).sum(1) / w.sum(1)), ("cls", real[:, 0])):
        prompted = PromptTunedTextEncoder(minilm, prompt).eval()
        prompted.pooling = pooling
        with torch.no_grad():
            torch.testing.assert_close(prompted(batch), want, rtol=1e-4, atol=1e-5)


def test_soft_prompt_reaches_the_features(minilm: Encoder) -> None:
    from atlbench.strategies.prompt import PromptTunedTextEncoder, initial_prompt

    prompted = PromptTunedTextEncoder(minilm, initial_prompt(minilm, 4, "vocab", 0)).eval()
    batch = minilm.prepare(SENTENCES[:3])
    with torch.no_grad():
        base = prompted(batch)
        assert base.shape == (3, minilm.feature_dim)
        assert not torch.allclose(base, minilm.eval()(batch), atol=1e-3)
        gen = torch.Generator().manual_seed(0)
        for j in (0, 3):  # every prompt position matters, the first and the last
            changed = copy.deepcopy(prompted)
            # a random direction: a constant shift of a prompt would vanish in the embeddings'
            # LayerNorm, exactly as it would for a word embedding
            changed.prompt[j] += 0.05 * torch.randn(minilm.feature_dim, generator=gen)
            assert (changed(batch) - base).abs().max() > 1e-3


def reference_prefix_bert(model: Any, batch: dict[str, torch.Tensor], table: torch.Tensor):
    """BERT by hand, each layer's attention also over its prefix keys and values: ``table`` is
    (n, layers * 2 * hidden), layer i's key block 2i and value block 2i + 1; the real tokens sit
    at positions n..n+L-1 (after the prefix); the output is mean-pooled over the real tokens."""
    cfg = model.config
    hidden, heads = cfg.hidden_size, cfg.num_attention_heads
    ids, mask = batch["input_ids"], batch["attention_mask"]
    (b, length), n = ids.shape, table.shape[0]
    prefix = table.view(n, cfg.num_hidden_layers * 2, hidden)
    emb = model.embeddings
    x = emb.word_embeddings(ids) + emb.position_embeddings(torch.arange(n, n + length))[None]
    x = emb.LayerNorm(x + emb.token_type_embeddings(torch.zeros_like(ids)))
    keep = torch.cat([torch.ones(b, n, dtype=torch.bool), mask.bool()], 1)[:, None, None, :]

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, -1, heads, hidden // heads).transpose(1, 2)

    for i, layer in enumerate(model.encoder.layer):
        att = layer.attention.self
        pk, pv = (prefix[:, 2 * i + j].expand(b, -1, -1) for j in (0, 1))
        q = split(att.query(x))
        k, v = split(torch.cat([pk, att.key(x)], 1)), split(torch.cat([pv, att.value(x)], 1))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hidden // heads)).masked_fill(~keep, -1e9)
        mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, hidden)
        x = layer.attention.output.LayerNorm(layer.attention.output.dense(mixed) + x)
        ff = layer.output.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x)))
        x = layer.output.LayerNorm(ff + x)
    w = mask.unsqueeze(-1).float()
    return (x * w).sum(1) / w.sum(1)


def test_prefix_tuning_matches_a_hand_written_attention_reference(minilm: Encoder) -> None:
    from atlbench.strategies.prompt import PrefixTunedTextEncoder

    prefixed = PrefixTunedTextEncoder(minilm, 3, None, seed=0).eval()
    table = prefixed.prefix_encoder.embedding.weight.detach()
    assert table.shape == (3, 6 * 2 * 384)
    batch = minilm.prepare(SENTENCES[:4])  # padded: the prefix must not unmask padding
    with torch.no_grad():
        got = prefixed(batch)
        torch.testing.assert_close(got, reference_prefix_bert(minilm.model, batch, table),
                                   rtol=1e-4, atol=1e-4)  # fmt: skip
        # every layer reads its own prefix: the last layer's changes the features too
        prefixed.prefix_encoder.embedding.weight[:, -384:] += 1.0
        assert (prefixed(batch) - got).abs().max() > 1e-3


def test_prefix_projection_counts_the_reparameterisation_mlp(minilm: Encoder) -> None:
    from atlbench.strategies.prompt import PrefixTunedTextEncoder

    prefixed = PrefixTunedTextEncoder(minilm, 3, 32, seed=0)
    hidden, out = 384, 6 * 2 * 384  # embeddings, then Linear(h, 32), tanh, Linear(32, 2Lh)
    expected = 3 * hidden + (hidden * 32 + 32) + (32 * out + out)
    assert sum(p.numel() for p in prefixed.trained_parameters()) == expected
    assert prefixed(minilm.prepare(SENTENCES[:2])).shape == (2, hidden)


def test_vpt_matches_timm_forward_with_prompts_hooked_in(vit: Encoder) -> None:
    """Reference: timm's own forward_features with prompts inserted after the class token on the
    way into the first block and removed on the way out, then timm's head pooling."""
    from atlbench.strategies.vpt import VPTEncoder, initial_prompt

    prompt = initial_prompt(vit.model, 5, seed=0) * 20  # large: the prompts must matter
    prompted = VPTEncoder(vit, prompt).eval()
    ref = copy.deepcopy(vit.model).eval()
    k = ref.num_prefix_tokens
    ref.norm_pre.register_forward_hook(
        lambda m, i, o: torch.cat([o[:, :k], prompt.expand(len(o), -1, -1), o[:, k:]], 1)
    )
    ref.norm.register_forward_hook(lambda m, i, o: torch.cat([o[:, :k], o[:, k + 5 :]], 1))
    x = vit.prepare(image_task().test.inputs)
    with torch.no_grad():
        got = prompted(x)
        torch.testing.assert_close(got, ref.forward_head(ref.forward_features(x), pre_logits=True))
        assert not torch.allclose(got, vit.eval()(x), atol=1e-3)
    assert got.shape == (len(x), vit.feature_dim)


def test_wrong_architectures_get_clear_errors(minilm: Encoder, vit: Encoder) -> None:
    for encoder in (timm_encoder("test_resnet"), minilm):
        task = image_task() if encoder.modality == "image" else text_task()
        with pytest.raises(ValueError, match="VPT needs a ViT"):
            run(context(task, encoder, "vpt", training=TINY), "vpt")
    for strategy in ("prompt_tuning", "prefix_tuning"):
        with pytest.raises(ValueError, match="needs a Hugging Face text encoder"):
            run(context(image_task(), vit, strategy, training=TINY), strategy)
    with pytest.raises(ValueError, match="positions"):
        run(context(text_task(), minilm, "prompt_tuning", training=TINY, n_tokens=500),
            "prompt_tuning")  # fmt: skip


def test_capabilities() -> None:
    from atlbench.registry import STRATEGIES

    for name in ("prompt_tuning", "prefix_tuning", "ia3", "vpt"):
        cls = STRATEGIES.get(name)
        assert cls.trainable and cls.trains_encoder(cls.Params())
        assert not cls.caches_frozen_prefix
