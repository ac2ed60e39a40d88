"""CKA tests against plain float64 definitions written out here (centring matrix H, the Song et
al. U-statistic on raw Grams, scipy distances) and against properties from Kornblith et al. 2019.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ortho_group
from torch import nn

from atlbench.similarity import (
    CKAResult,
    MinibatchCKA,
    auto_layers,
    cka_matrix,
    linear_cka,
    rbf_cka,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---- independent references (plain float64 numpy) --------------------------------------------


def hsic_biased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012), eq. 5, on the raw (uncentred) Gram matrices."""
    n = k.shape[0]
    k = k.copy()
    l = l.copy()  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    total = (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l @ one)
    )
    return float(total) / (n * (n - 3))


def cka_ref(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:  # noqa: E741
    f = hsic_unbiased if debiased else hsic_biased
    return f(k, l) / np.sqrt(f(k, k) * f(l, l))


def lin(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def rbf_ref(x: np.ndarray, sigma: float) -> np.ndarray:
    d = pdist(np.asarray(x, dtype=np.float64))
    bw = sigma * np.median(d)
    return np.exp(-(squareform(d) ** 2) / (2 * bw**2))


def minibatch_ref(batches_x: list[np.ndarray], batches_y: list[np.ndarray]) -> float:
    """Nguyen et al. 2021: sum HSIC_1 over batches, then divide once."""
    xy = sum(hsic_unbiased(lin(x), lin(y)) for x, y in zip(batches_x, batches_y, strict=True))
    xx = sum(hsic_unbiased(lin(x), lin(x)) for x in batches_x)
    yy = sum(hsic_unbiased(lin(y), lin(y)) for y in batches_y)
    return xy / np.sqrt(xx * yy)


def related(rng: np.random.Generator, n: int, d1: int, d2: int, noise: float = 1.0):
    x = rng.normal(size=(n, d1)) + rng.normal(size=d1)  # non-zero mean on purpose
    y = np.tanh(x @ rng.normal(size=(d1, d2))) + noise * rng.normal(size=(n, d2)) + 3.0
    return x, y


# ---- linear / rbf on arrays -------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("n", "d1", "d2"), [(60, 5, 8), (20, 40, 7), (12, 30, 50)])
def test_linear_cka_matches_gram_definition(n, d1, d2, debiased):
    rng = np.random.default_rng(n * 1000 + d1 + d2 + debiased)
    x, y = related(rng, n, d1, d2)
    expected = cka_ref(lin(x), lin(y), debiased)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    got32 = linear_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert got32 == pytest.approx(cka_ref(lin(x), lin(y), False), abs=1e-5)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("sigma", [0.4, 0.8, 2.0])
def test_rbf_cka_matches_definition(sigma, debiased):
    rng = np.random.default_rng(int(sigma * 10) + 7 * debiased)
    x, y = related(rng, 40, 6, 9, noise=0.5)
    expected = cka_ref(rbf_ref(x, sigma), rbf_ref(y, sigma), debiased)
    assert rbf_cka(x, y, sigma=sigma, debiased=debiased) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kernel", [linear_cka, rbf_cka])
@pytest.mark.parametrize("debiased", [False, True])
def test_invariances_from_the_cka_paper(kernel, debiased):
    rng = np.random.default_rng(11)
    x, y = related(rng, 80, 10, 12)
    base = kernel(x, y, debiased=debiased)
    q = ortho_group.rvs(10, random_state=3)
    assert kernel(x @ q, y, debiased=debiased) == pytest.approx(base, rel=1e-9)
    assert kernel(7.5 * x, y, debiased=debiased) == pytest.approx(base, rel=1e-9)
    assert kernel(x + 100.0, y, debiased=debiased) == pytest.approx(base, rel=1e-7)
    assert kernel(y, x, debiased=debiased) == pytest.approx(base, rel=1e-12)
    assert kernel(x, x, debiased=debiased) == pytest.approx(1.0, rel=1e-12)
    # a badly conditioned invertible map reweights directions, which CKA must notice
    a = np.diag(np.logspace(-2, 2, 10)) @ ortho_group.rvs(10, random_state=4)
    assert np.linalg.matrix_rank(a) == 10
    assert abs(kernel(x @ a, y, debiased=debiased) - base) > 0.05


def test_linear_cka_rejects_bad_input_and_flags_constant_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    with pytest.raises(ValueError, match="same number"):
        linear_cka(x, x[:-1])
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(np.where(x > 1, np.nan, x), x)
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(x[:, 0], x)
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], x[:3], debiased=True)
    const = np.full((30, 4), 0.1, dtype=np.float32)  # 0.1 is inexact: rounding must not leak
    for f in (linear_cka, rbf_cka):
        for debiased in (False, True):
            with pytest.warns(RuntimeWarning, match="undefined"):
                assert np.isnan(f(const, x, debiased=debiased))


# ---- minibatch accumulation -------------------------------------------------------------------


def test_minibatch_accumulates_every_batch_exactly():
    rng = np.random.default_rng(5)
    xs, ys, zs = [], [], []
    for n in (17, 25, 9):
        x, y = related(rng, n, 6, 30)
        xs.append(x)
        ys.append(y)
        zs.append(rng.normal(size=(n, 4, 2)))  # >2-D features are flattened
    acc = MinibatchCKA(debiased=True)
    for x, y, z in zip(xs, ys, zs, strict=True):
        acc.update([x, torch.tensor(y)], [y, z])
    got = acc.compute()
    zf = [z.reshape(len(z), -1) for z in zs]
    expected = np.array(
        [[minibatch_ref(a, b) for b in (ys, zf)] for a in (xs, ys)],
    )
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert acc.n_examples == 51 and acc.n_batches == 3 and got.shape == acc.shape
    # the last batch alone gives a different answer: we must not be reporting it
    assert abs(got[0, 0] - minibatch_ref(xs[-1:], ys[-1:])) > 1e-3


def test_minibatch_debiased_converges_to_full_data_value():
    rng = np.random.default_rng(21)
    x, y = related(rng, 6000, 20, 40, noise=2.0)
    full = cka_ref(lin(x[:1500]), lin(y[:1500]), debiased=True)  # float64 Gram reference
    full_all = linear_cka(x, y, debiased=True)
    assert full_all == pytest.approx(full, abs=0.03)
    for batch in (50, 500):
        acc = MinibatchCKA(debiased=True)
        for i in range(0, len(x), batch):
            acc.update([x[i : i + batch]], [y[i : i + batch]])
        assert acc.compute()[0, 0] == pytest.approx(full_all, abs=0.01)
    # the biased estimator with small batches is pulled upwards instead
    acc = MinibatchCKA(debiased=False)
    for i in range(0, len(x), 50):
        acc.update([x[i : i + 50]], [y[i : i + 50]])
    assert acc.compute()[0, 0] > full_all + 0.02


def test_minibatch_folds_tiny_batches_and_flags_constant_layers():
    rng = np.random.default_rng(8)
    x, y = related(rng, 13, 5, 6)
    folded = MinibatchCKA()
    folded.update([x[:3]], [y[:3]])
    folded.update([x[3:]], [y[3:]])
    assert folded.n_examples == 13
    assert folded.compute()[0, 0] == pytest.approx(cka_ref(lin(x), lin(y), True), rel=1e-9)
    trailing = MinibatchCKA()
    trailing.update([x[:10]], [y[:10]])
    trailing.update([x[10:]], [y[10:]])
    with pytest.warns(RuntimeWarning, match="not used"):
        trailing.compute()
    const = MinibatchCKA()
    for _ in range(2):
        const.update([np.full((8, 3), 0.3), x[:8]], [y[:8]])
    with pytest.warns(RuntimeWarning, match="undefined"):
        m = const.compute()
    assert np.isnan(m[0, 0]) and np.isfinite(m[1, 0])
    with pytest.raises(ValueError, match="no batch"):
        MinibatchCKA().compute()


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_minibatch_rejects_non_finite_and_bad_precision(precision):
    rng = np.random.default_rng(9)
    x, y = related(rng, 12, 4, 5)
    bad = x.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf \(layers a\[1\] / b\[\]\)"):
        MinibatchCKA(precision=precision).update([x, bad], [y])
    nan = y.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"layers a\[\] / b\[0\]"):
        MinibatchCKA(precision=precision).update([x], [nan])
    with pytest.raises(ValueError, match="precision"):
        MinibatchCKA(precision="float16")
    # a constant layer is still caught when the Gram runs in float32 (rounding-level residue)
    const = MinibatchCKA(precision=precision)
    const.update([np.full((8, 3), 1e3 / 3), x[:8]], [y[:8]])
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(const.compute()[0, 0])


# ---- hooks on models ----------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "tol"), [("float64", 1e-9), ("float32", 1e-6)])
def test_hooks_copy_outputs_before_inplace_relu(precision, tol):
    """torch-cka / pytorch-cka keep a reference that the in-place ReLU overwrites (CKA 1.0)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(inplace=True), nn.Linear(32, 4))
    data = [torch.randn(64, 16) for _ in range(4)]
    with torch.no_grad():
        pre = [model[0](x).double().numpy() for x in data]
    post = [np.maximum(p, 0.0) for p in pre]
    expected = minibatch_ref(pre, post)
    res = cka_matrix(model, model, data, layers_a=["0"], layers_b=["1"], precision=precision)
    assert res.matrix[0, 0] == pytest.approx(expected, rel=tol)
    assert res.matrix[0, 0] < 0.95
    biased = cka_matrix(model, model, data, ["0"], ["1"], debiased=False, precision=precision)
    biased = biased.matrix[0, 0]
    exp_b = sum(hsic_biased(lin(a), lin(b)) for a, b in zip(pre, post, strict=True)) / np.sqrt(
        sum(hsic_biased(lin(a), lin(a)) for a in pre)
        * sum(hsic_biased(lin(b), lin(b)) for b in post)
    )
    assert biased == pytest.approx(exp_b, rel=tol)


class _Shift(nn.Module):
    """Adds a large constant: a layer whose raw float32 Gram would lose most of its digits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 3000.0


def _offset_model() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(12, 40), _Shift(), nn.LayerNorm(40)).eval()


def _offset_batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    batches = [torch.randn(48, 12, generator=gen) for _ in range(4)]
    batches[2] = batches[2][:1].expand(48, 12).clone()  # every example equal: constant layers
    return batches


@pytest.mark.parametrize("debiased", [True, False])
def test_hooks_centre_only_layers_whose_offset_costs_digits(monkeypatch, debiased):
    """The first batch centres every layer; afterwards only the +3000 layer keeps paying for
    it, a layer that goes constant mid-stream goes back to centring, and every value still
    matches the float64 definition (the raw-Gram path is exact for the debiased estimator and
    double-centred for the biased one)."""
    from atlbench import similarity

    calls: list[tuple[str, bool]] = []
    centred, raw = similarity._centred_gram, similarity._raw_gram

    def spy(fn, was_centred):
        def wrapped(feat, dtype):
            # the shifted layer is the one whose mean is ~3000
            calls.append(("shift" if float(feat.mean()) > 1000 else "other", was_centred))
            return fn(feat, dtype)

        return wrapped

    monkeypatch.setattr(similarity, "_centred_gram", spy(centred, True))
    monkeypatch.setattr(similarity, "_raw_gram", spy(raw, False))
    model, data = _offset_model(), _offset_batches()
    res = cka_matrix(model, model, data, ["0", "1", "2"], ["0", "1", "2"], debiased=debiased)
    per_batch = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(per_batch) == 4
    assert all(c for _, c in per_batch[0])  # nothing known yet: all centred
    assert [c for kind, c in per_batch[1] if kind == "other"] == [False, False]
    assert [c for kind, c in per_batch[1] if kind == "shift"] == [True]
    assert all(c for _, c in per_batch[3])  # batch 3 was constant in every layer

    with torch.no_grad():
        outs = [[model[: i + 1](x).double().numpy() for i in range(3)] for x in data]
    # both estimators are shift invariant; centring first keeps the float64 reference exact too
    outs = [[o - o.mean(0) for o in batch] for batch in outs]
    f = hsic_unbiased if debiased else hsic_biased
    hsic = np.array(
        [[sum(f(lin(o[i]), lin(o[j])) for o in outs) for j in range(3)] for i in range(3)]
    )
    expected = hsic / np.sqrt(np.outer(np.diag(hsic), np.diag(hsic)))
    np.testing.assert_allclose(res.matrix, expected, rtol=1e-6)
    assert expected[0, 1] == pytest.approx(1.0)  # a shift changes nothing


def test_a_raw_float32_gram_of_the_shifted_layer_would_be_wrong(monkeypatch):
    """Why the offset check exists: forced onto raw float32 Grams (the way pytorch-cka
    computes them), the +3000 layer's CKA with itself before the shift is visibly off."""
    from atlbench import similarity

    model, data = _offset_model(), _offset_batches()
    data = [x for i, x in enumerate(data) if i != 2]
    guarded = cka_matrix(model, model, data, ["0"], ["1"]).matrix[0, 0]
    monkeypatch.setattr(similarity, "_MAX_RAW_OFFSET", float("inf"))
    forced = cka_matrix(model, model, data, ["0"], ["1"]).matrix[0, 0]
    assert guarded == pytest.approx(1.0, abs=1e-6)
    assert abs(forced - 1.0) > 1e-3


def _resnet_blocks(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Stem and block outputs by calling the modules in order (no hooks)."""
    x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    outs = [x]
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            x = block(x)
            outs.append(x)
    return [o.flatten(1).double().numpy() for o in outs]


@pytest.mark.parametrize(
    ("precision", "rtol", "atol"), [("float64", 1e-6, 1e-9), ("float32", 0.0, 1e-6)]
)
def test_cka_matrix_on_timm_resnets_matches_reference(precision, rtol, atol):
    """Float64 Grams match the float64 reference to rounding; float32 Grams (the default for
    model hooks) stay within 1e-6, far below the sampling noise of a CKA estimate."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    a = timm.create_model("test_resnet", pretrained=False)
    torch.manual_seed(2)
    b = timm.create_model("test_resnet", pretrained=False)
    a.train()  # must come back in train mode
    gen = torch.Generator().manual_seed(3)
    data = [(torch.randn(12, 3, 32, 32, generator=gen), torch.zeros(12)) for _ in range(3)]
    res = cka_matrix(a, b, data, precision=precision)
    assert isinstance(res, CKAResult) and res.n_examples == 36
    assert (
        res.layers_a
        == auto_layers(a)
        == ["maxpool", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    )
    assert a.training and b.training
    a.eval()
    b.eval()
    with torch.no_grad():
        fa = [_resnet_blocks(a, x) for x, _ in data]
        fb = [_resnet_blocks(b, x) for x, _ in data]
    expected = np.array(
        [
            [minibatch_ref([f[i] for f in fa], [f[j] for f in fb]) for j in range(5)]
            for i in range(5)
        ]
    )
    np.testing.assert_allclose(res.matrix, expected, rtol=rtol, atol=atol)
    assert not any(m._forward_hooks for m in a.modules())
    assert not any(m._forward_hooks for m in b.modules())


def test_identical_models_give_one_on_diagonal_with_one_pass():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_vit", pretrained=False)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    data = [torch.randn(8, 3, 160, 160) for _ in range(2)]
    res = cka_matrix(model, model, data, max_batches=1)
    assert len(calls) == 1 and res.n_examples == 8
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, rtol=1e-9)
    np.testing.assert_allclose(res.matrix, res.matrix.T, rtol=1e-9)
    twin = copy.deepcopy(model)  # a different object runs separately but must agree
    np.testing.assert_allclose(
        cka_matrix(model, twin, data).matrix, cka_matrix(model, model, data).matrix, rtol=1e-6
    )


def test_cka_matrix_on_tiny_bert_with_padding_mask():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    a, b = transformers.BertModel(cfg), transformers.BertModel(cfg)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        ids = torch.randint(1, 50, (10, 12), generator=gen)
        mask = (torch.arange(12)[None, :] < torch.randint(4, 13, (10, 1), generator=gen)).long()
        batches.append({"input_ids": ids * mask, "attention_mask": mask})
    res = cka_matrix(a, b, batches)
    assert res.layers_a == ["embeddings", "encoder.layer.0", "encoder.layer.1"]

    def pooled(model, batch):
        with torch.no_grad():
            hs = model(**batch, output_hidden_states=True).hidden_states
        w = batch["attention_mask"].double()[..., None]
        return [((h.double() * w).sum(1) / w.sum(1)).numpy() for h in hs]

    fa = [pooled(a.eval(), bt) for bt in batches]
    fb = [pooled(b.eval(), bt) for bt in batches]
    expected = np.array(
        [
            [minibatch_ref([f[i] for f in fa], [f[j] for f in fb]) for j in range(3)]
            for i in range(3)
        ]
    )
    np.testing.assert_allclose(res.matrix, expected, rtol=1e-5, atol=1e-9)


def test_auto_layers_and_errors():
    timm = pytest.importorskip("timm")
    r18 = timm.create_model("resnet18", pretrained=False)
    blocks = [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    assert auto_layers(r18) == ["maxpool", *blocks]
    vit = timm.create_model("test_vit", pretrained=False)
    assert auto_layers(vit) == ["patch_embed"] + [f"blocks.{i}" for i in range(len(vit.blocks))]
    with pytest.raises(ValueError, match="no block sequence"):
        auto_layers(nn.Linear(2, 2))
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match="not in"):
        cka_matrix(mlp, mlp, [torch.randn(8, 4)], ["0"], ["nope"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cka_matrix(mlp, mlp, [torch.randn(2, 4), torch.randn(9, 4)], ["0"], ["1"])
    assert res.n_examples == 9
    with pytest.warns(RuntimeWarning, match="skipped 2"):
        cka_matrix(mlp, mlp, [torch.randn(2, 4), torch.randn(9, 4)], ["0"], ["1"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_self_product_is_the_gram_matrix(dtype):
    """The syrk route (numpy matmul on one buffer) gives the full symmetric x @ x.T, also for a
    non-contiguous input."""
    from atlbench.similarity import _self_product

    x = torch.randn(30, 70, generator=torch.Generator().manual_seed(0), dtype=dtype)
    for t in (x, x[:, ::2], x.T.contiguous().T):
        got = _self_product(t)
        assert got.dtype == dtype and got.shape == (30, 30)
        assert torch.equal(got, got.T)
        ref = t.double() @ t.double().T
        scale = (1e-6 if dtype == torch.float32 else 1e-14) * float(ref.abs().max())
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=scale)


class _Tail(nn.Module):
    """A module after the hooked layers that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def test_passes_stop_after_the_last_hooked_layer():
    """From the second batch on, nothing after the last hooked layer runs, and the result is
    the one the whole passes give; a layer called twice per pass keeps the passes whole."""
    from atlbench import similarity

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4), _Tail()).eval()
    gen = torch.Generator().manual_seed(1)
    data = [torch.randn(16, 6, generator=gen) for _ in range(4)]
    res = cka_matrix(model, model, data, ["0", "2"], ["1", "2"])
    assert model[3].calls == 1  # the first batch only
    with torch.no_grad():
        outs = [[model[: i + 1](x).double().numpy() for i in (0, 1, 2)] for x in data]
    expected = [
        [minibatch_ref([o[i] for o in outs], [o[j] for o in outs]) for j in (1, 2)] for i in (0, 2)
    ]
    np.testing.assert_allclose(res.matrix, expected, rtol=1e-5)

    shared = nn.Linear(6, 6)
    twice = nn.Sequential(shared, nn.ReLU(), shared, _Tail()).eval()
    with pytest.warns(RuntimeWarning, match="called 2 times"):
        cka_matrix(twice, twice, data, ["0"], ["1"])
    assert twice[3].calls == len(data)
    rec = similarity._Recorder(model, ["0"], "float32")
    try:
        rec.start(None)
        model(data[0])
        rec.arm_early_exit()
        assert rec.early_exit
        rec.start(None)
        with pytest.raises(similarity._StopForward):
            model(data[0])
    finally:
        rec.remove()


def test_twin_models_run_side_by_side_and_agree(monkeypatch):
    """Two CPU models of one architecture take each batch in parallel threads: same values as
    one after the other, thread settings restored, errors raised; others run in turn."""
    from threadpoolctl import threadpool_info

    from atlbench import similarity

    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    a = timm.create_model("test_resnet", pretrained=False)
    torch.manual_seed(2)
    b = timm.create_model("test_resnet", pretrained=False)
    gen = torch.Generator().manual_seed(3)
    data = [torch.randn(12, 3, 32, 32, generator=gen) for _ in range(3)]
    threads = torch.get_num_threads()
    blas = [i["num_threads"] for i in threadpool_info()]
    assert similarity._twins(a, b) == (threads >= 2)
    assert not similarity._twins(a, a)
    assert not similarity._twins(a, nn.Sequential(*a.children()))  # another class
    assert not similarity._twins(nn.Sequential(a.conv1), nn.Sequential(a.conv1))  # shared
    side_by_side = cka_matrix(a, b, data).matrix
    assert torch.get_num_threads() == threads
    assert [i["num_threads"] for i in threadpool_info()] == blas
    monkeypatch.setattr(similarity, "_twins", lambda *_: False)
    in_turn = cka_matrix(a, b, data).matrix
    np.testing.assert_allclose(side_by_side, in_turn, rtol=0, atol=1e-6)
    monkeypatch.undo()

    def broken(*_args):
        raise RuntimeError("boom")

    handle = a.layer2.register_forward_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            cka_matrix(a, b, data)
    finally:
        handle.remove()
    assert torch.get_num_threads() == threads
    assert not any(m._forward_hooks for m in [*a.modules(), *b.modules()])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_stay_on_cuda():
    rng = np.random.default_rng(0)
    x, y = related(rng, 50, 5, 70)
    xc, yc = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")
    assert linear_cka(xc, yc, True) == pytest.approx(cka_ref(lin(x), lin(y), True), rel=1e-9)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True)).cuda()
    data = [torch.randn(16, 5) for _ in range(2)]
    res = cka_matrix(model, model, data, ["0"], ["1"])
    assert np.isfinite(res.matrix).all()
