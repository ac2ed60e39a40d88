"""9 x 9 block CKA matrix (stem + 8 basic blocks) of two timm resnet18 on 1,000 random 32x32 images.

Run: pytest tests/benchmarks/test_bench_cka.py -p no:cacheprovider -s \
         --benchmark-columns=min,median,rounds
Three groups:

* whole runs: the bare forward passes of both models (the floor), atlbench, torch-cka and
  pytorch-cka (PyPI; skipped when not installed), each timed in its own block of rounds;
* interleaved: one benchmark round runs the bare passes, atlbench and pytorch-cka back to back
  (the first of them rotating), and the per-round ratios (median, quartiles) go to
  ``extra_info`` (printed with ``-s``): to the bare passes, and atlbench over pytorch-cka. On a
  shared machine whose speed drifts by 10-20% between blocks of rounds, only ratios taken within
  one round resolve a few percent. atlbench runs two models of one architecture side by side on
  half the threads each (see ``similarity._twins``), so the round also times the bare passes
  scheduled that way ("bare_parallel"): atlbench over it is the CKA work alone. The test runs
  at torch's default thread count and at one thread: one-thread ratios are CPU-cost ratios,
  which a busy machine barely moves (with two threads on busy cores, a pass waits for its
  slowest thread at every op, and the bare passes slow down several-fold);
* per batch, forward excluded: the CKA work alone, replayed on one batch's captured block
  outputs, for atlbench (its steady state, after the first batch has measured each layer's
  offset) and pytorch-cka (its own accumulation method), next to one forward pass of both models.

``test_inplace_relu_values`` and ``test_offset_values`` are not timings: they record what each
library reports where the true value is known.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from atlbench import similarity
from atlbench.similarity import auto_layers, cka_matrix, linear_cka

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")

GROUP = "cka resnet18 9x9, 1000 imgs 32px, batch 100"
ROUNDS = 8
INTERLEAVED_ROUNDS = 12
BATCH_ROUNDS = 200


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    a = timm.create_model("resnet18", pretrained=False).eval()
    torch.manual_seed(1)
    b = timm.create_model("resnet18", pretrained=False).eval()
    images = torch.randn(1000, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(images), batch_size=100, shuffle=False)
    layers = auto_layers(a)
    assert len(layers) == 9
    return a, b, loader, layers


def _features(model, loader, layers):
    """Per-batch float64 features of the hooked layers, cloned (the reference path)."""
    mods = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    hooks = [
        mods[n].register_forward_hook(lambda _m, _i, o, n=n: store.__setitem__(n, o.clone()))
        for n in layers
    ]
    out = []
    with torch.inference_mode():
        for (x,) in loader:
            model(x)
            out.append([store[n].flatten(1).double().numpy() for n in layers])
    for h in hooks:
        h.remove()
    return out


def _hsic1(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    n = len(k)
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))  # noqa: E741
    s = k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k.sum(0) @ l.sum(0))
    return ((k * l).sum() + s) / (n * (n - 3))


def test_values_against_float64_reference(setup):
    a, b, loader, layers = setup
    fa, fb = _features(a, loader, layers), _features(b, loader, layers)
    ours = cka_matrix(a, b, loader, precision="float64").matrix
    fast = cka_matrix(a, b, loader).matrix  # the default: float32 Grams, float64 sums
    ka = [[x @ x.T for x in batch] for batch in fa]
    kb = [[y @ y.T for y in batch] for batch in fb]
    xx = np.array([sum(_hsic1(k[i], k[i]) for k in ka) for i in range(9)])
    yy = np.array([sum(_hsic1(k[j], k[j]) for k in kb) for j in range(9)])
    xy = np.array(
        [[sum(_hsic1(p[i], q[j]) for p, q in zip(ka, kb, strict=True)) for j in range(9)]
         for i in range(9)]
    )  # fmt: skip
    np.testing.assert_allclose(ours, xy / np.sqrt(np.outer(xx, yy)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fast, ours, rtol=0, atol=1e-6)
    # full-data (N = 1000) debiased linear CKA in float64: same population quantity
    whole_a = [np.concatenate([f[i] for f in fa]) for i in range(9)]
    whole_b = [np.concatenate([f[j] for f in fb]) for j in range(9)]
    full = np.array([[linear_cka(x, y, True) for y in whole_b] for x in whole_a])
    assert np.abs(ours - full).max() < 0.05


def _pytorch_cka():
    cka = pytest.importorskip("cka")
    if not hasattr(cka, "compute_cka"):
        pytest.skip("the installed `cka` module is not pytorch-cka")
    return cka


def _run(benchmark, fn, **info):
    benchmark.group = GROUP
    benchmark.extra_info.update(info)
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def _bare_passes(a: nn.Module, b: nn.Module, loader: DataLoader) -> None:
    """The floor: both models' forward passes over the data, nothing else."""
    with torch.inference_mode():
        for (x,) in loader:
            a(x)
            b(x)


def _pytorch_cka_matrix(
    cka: Any, a: nn.Module, b: nn.Module, loader: DataLoader, layers: list[str]
) -> torch.Tensor:
    return cka.compute_cka(
        a, b, loader, layers=layers, model2_layers=layers, device="cpu", progress=False
    )[0]


def test_bare_forward(benchmark, setup):
    a, b, loader, _ = setup
    _run(benchmark, lambda: _bare_passes(a, b, loader))


def test_atlbench(benchmark, setup):
    a, b, loader, layers = setup
    res = _run(benchmark, lambda: cka_matrix(a, b, loader, layers, layers))
    assert res.matrix.shape == (9, 9) and np.isfinite(res.matrix).all()


def test_torch_cka(benchmark, setup):
    torch_cka = pytest.importorskip("torch_cka")
    a, b, loader, layers = setup
    ours = cka_matrix(a, b, loader).matrix
    # torch-cka registers hooks it never removes, so each round gets fresh copies of the models
    holder = {}

    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            holder["cka"] = torch_cka.CKA(
                copy.deepcopy(a), copy.deepcopy(b), "a", "b", layers, layers, device="cpu"
            )
        return (), {}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            holder["cka"].compare(loader)
        return holder["cka"].hsic_matrix

    benchmark.group = GROUP
    got = benchmark.pedantic(run, setup=make, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["max_abs_diff_vs_atlbench"] = float(np.abs(got.numpy() - ours).max())


def test_pytorch_cka(benchmark, setup):
    cka = _pytorch_cka()
    a, b, loader, layers = setup
    ours = cka_matrix(a, b, loader).matrix
    out = _run(benchmark, lambda: _pytorch_cka_matrix(cka, a, b, loader, layers))
    benchmark.extra_info["max_abs_diff_vs_atlbench"] = float(np.abs(out.numpy() - ours).max())


def _bare_parallel(a: nn.Module, b: nn.Module, loader: DataLoader) -> None:
    """The bare passes scheduled as atlbench schedules twin models: side by side, one thread
    pool each, on half the threads."""
    threads = torch.get_num_threads()

    def run_a(x: torch.Tensor) -> None:
        with torch.inference_mode():
            a(x)

    torch.set_num_threads(max(1, threads // 2))
    try:
        with ThreadPoolExecutor(1) as pool, torch.inference_mode():
            for (x,) in loader:
                other = pool.submit(run_a, x)
                b(x)
                other.result()
    finally:
        torch.set_num_threads(threads)


def _spread(ratios: np.ndarray) -> list[float]:
    return [round(float(q), 4) for q in np.quantile(ratios, [0.0, 0.25, 0.5, 0.75, 1.0])]


@pytest.fixture(params=[None, 1], ids=["default_threads", "one_thread"])
def threads(request):
    """torch's default thread count, and one thread: with one, every run is pure compute on one
    core, so the ratios are CPU-cost ratios that a busy machine barely moves."""
    before = torch.get_num_threads()
    if request.param is not None:
        torch.set_num_threads(request.param)
    yield torch.get_num_threads()
    torch.set_num_threads(before)


def test_interleaved_ratios(benchmark, setup, threads):
    """Bare passes, atlbench and pytorch-cka back to back in every round; per-round ratios."""
    cka = _pytorch_cka()
    a, b, loader, layers = setup
    runs = {
        "bare": lambda: _bare_passes(a, b, loader),
        "atlbench": lambda: cka_matrix(a, b, loader, layers, layers),
        "pytorch-cka": lambda: _pytorch_cka_matrix(cka, a, b, loader, layers),
    }
    if similarity._twins(a, b):  # atlbench's schedule for these models, without CKA work
        runs["bare_parallel"] = lambda: _bare_parallel(a, b, loader)
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)

    def one_round():
        for name in order:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
        order.append(order.pop(0))  # rotate: no run always follows the same one

    benchmark.group = f"cka interleaved rounds, {threads} thread(s)"
    benchmark.pedantic(one_round, rounds=INTERLEAVED_ROUNDS, iterations=1, warmup_rounds=1)
    t = {k: np.array(v[1:]) for k, v in times.items()}  # [0] is the warm-up round
    info = benchmark.extra_info
    info["threads"] = threads
    for name in [k for k in runs if k != "bare"]:
        info[f"median_ratio_{name}"] = round(float(np.median(t[name] / t["bare"])), 4)
    # min, quartiles, max over rounds
    info["spread_atlbench_over_bare"] = _spread(t["atlbench"] / t["bare"])
    info["spread_atlbench_over_pytorch_cka"] = _spread(t["atlbench"] / t["pytorch-cka"])
    info["spread_pytorch_cka_over_bare"] = _spread(t["pytorch-cka"] / t["bare"])
    if "bare_parallel" in t:
        info["spread_atlbench_over_bare_parallel"] = _spread(t["atlbench"] / t["bare_parallel"])
    print(f"\ninterleaved ratios (min, q25, median, q75, max over rounds): {dict(info)}")
    assert len(t["bare"]) == INTERLEAVED_ROUNDS


@pytest.fixture(scope="module")
def one_batch(setup):
    """One batch's block outputs of both models, captured once (the replayed CKA input)."""
    a, b, loader, layers = setup
    (x,) = next(iter(loader))

    def capture(model):
        mods = dict(model.named_modules())
        store: dict[str, torch.Tensor] = {}
        hooks = [
            mods[n].register_forward_hook(lambda _m, _i, o, n=n: store.__setitem__(n, o.clone()))
            for n in layers
        ]
        with torch.inference_mode():
            model(x)
        for h in hooks:
            h.remove()
        return [store[n] for n in layers]

    return x, capture(a), capture(b)


BATCH_GROUP = "cka work per batch of 100, forward excluded"


def test_batch_forward(benchmark, setup, one_batch):
    a, b, _, _ = setup
    x = one_batch[0]

    def run():
        with torch.inference_mode():
            a(x)
            b(x)

    benchmark.group = BATCH_GROUP
    benchmark.pedantic(run, rounds=BATCH_ROUNDS, iterations=1, warmup_rounds=5)


def test_batch_atlbench(benchmark, setup, one_batch):
    a, b, _, layers = setup
    _, fa, fb = one_batch
    rec_a = similarity._Recorder(a, layers, "float32")
    rec_b = similarity._Recorder(b, layers, "float32")
    hooks_a = [rec_a._hook(n) for n in layers]
    hooks_b = [rec_b._hook(n) for n in layers]
    acc = similarity.MinibatchCKA()
    n = fa[0].shape[0]

    def run():  # what cka_matrix does per batch around the forward passes
        rec_a.start(None)
        rec_b.start(None)
        for hook, out in zip(hooks_a, fa, strict=True):
            hook(None, None, out)
        for hook, out in zip(hooks_b, fb, strict=True):
            hook(None, None, out)
        similarity._add_batch(acc, rec_a, layers, (rec_b, layers), n)

    try:
        with torch.inference_mode(), similarity._blas_single_thread():  # as cka_matrix runs it
            run()  # the first batch centres every layer and measures the offsets
            benchmark.group = BATCH_GROUP
            benchmark.extra_info["layers_skipping_centring"] = len(rec_a.raw) + len(rec_b.raw)
            benchmark.pedantic(run, rounds=BATCH_ROUNDS, iterations=1, warmup_rounds=5)
    finally:
        rec_a.remove()
        rec_b.remove()


def test_batch_pytorch_cka(benchmark, setup, one_batch):
    cka = _pytorch_cka()
    a, b, _, layers = setup
    _, fa, fb = one_batch
    obj = cka.CKA(a, b, layers, layers, device="cpu")  # no hooks until used as a context
    if not hasattr(obj, "_accumulate_hsic"):
        pytest.skip("this pytorch-cka version has no _accumulate_hsic")
    sums = torch.zeros(len(layers), len(layers)), torch.zeros(len(layers)), torch.zeros(len(layers))

    def run():  # its per-batch work after the forward passes: Grams, stack, HSIC, sums
        obj._clear_features()
        for name, out in zip(layers, fa, strict=True):
            obj._model1_layer_to_feature[name] = out.flatten(1)
        for name, out in zip(layers, fb, strict=True):
            obj._model2_layer_to_feature[name] = out.flatten(1)
        obj._accumulate_hsic(*sums)

    with torch.inference_mode():
        benchmark.group = BATCH_GROUP
        benchmark.pedantic(run, rounds=BATCH_ROUNDS, iterations=1, warmup_rounds=5)


def _peer_values(model: nn.Module, loader: DataLoader, record_property: Any) -> dict[str, Any]:
    """What each installed peer reports for CKA(model layer "0", model layer "1"), recorded.

    torch-cka asserts that its HSIC has no NaN; that failure is recorded as its answer.
    """
    theirs: dict[str, Any] = {}
    try:
        import cka

        if hasattr(cka, "compute_cka"):
            m = cka.compute_cka(
                model, model, loader, layers=["0"], model2_layers=["1"], device="cpu",
                progress=False,
            )[0]  # fmt: skip
            theirs["pytorch-cka"] = float(m[0, 0])
    except ImportError:
        pass
    try:
        import torch_cka

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tc = torch_cka.CKA(
                copy.deepcopy(model), copy.deepcopy(model), "a", "b", ["0"], ["1"], device="cpu"
            )
            try:
                tc.compare(loader)
                theirs["torch-cka"] = float(tc.hsic_matrix[0, 0])
            except AssertionError as err:
                theirs["torch-cka"] = f"error: {err}"
    except ImportError:
        pass
    for name, value in theirs.items():
        record_property(name, value)
    return theirs


def _listed(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
    )


def test_inplace_relu_values(record_property):
    """Linear -> ReLU(inplace=True): the true linear CKA is ~0.86, not 1.

    torch-cka and pytorch-cka keep a reference to the Linear output, which the in-place ReLU then
    overwrites, so both of their "layers" are the ReLU output and they report 1.0. atlbench reduces
    each output to its Gram matrix inside the hook, before the overwrite.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(inplace=True)).eval()
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(3))
    loader = DataLoader(TensorDataset(x), batch_size=128)
    with torch.no_grad():
        pre = model[0](x).double().numpy()
    post = np.maximum(pre, 0.0)
    xc, yc = pre - pre.mean(0), post - post.mean(0)  # Kornblith et al. linear CKA, float64
    truth = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert 0.8 < truth < 0.9
    one_batch = DataLoader(TensorDataset(x), batch_size=512)
    exact = cka_matrix(model, model, one_batch, ["0"], ["1"], debiased=False, precision="float64")
    exact = exact.matrix[0, 0]
    assert exact == pytest.approx(truth, rel=1e-9)
    ours = cka_matrix(model, model, loader, ["0"], ["1"]).matrix[0, 0]  # debiased, 4 batches
    assert abs(ours - truth) < 0.02
    record_property("true_linear_cka", float(truth))
    record_property("atlbench", float(ours))
    theirs = _peer_values(model, loader, record_property)
    print(f"\nLinear vs in-place ReLU: truth {truth:.4f}, atlbench {ours:.4f}, "
          + _listed(theirs))  # fmt: skip


def test_offset_values(record_property):
    """Linear layer vs itself + 3000: the true CKA is 1 (CKA ignores shifts).

    Raw float32 Grams of features with such an offset keep almost none of the centred signal;
    atlbench centres layers like this one before the product (see ``similarity._Recorder``).
    """
    torch.manual_seed(4)

    class Shift(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 3000.0

    model = nn.Sequential(nn.Linear(12, 40), Shift()).eval()
    x = torch.randn(144, 12, generator=torch.Generator().manual_seed(5))
    loader = DataLoader(TensorDataset(x), batch_size=48)
    ours = cka_matrix(model, model, loader, ["0"], ["1"]).matrix[0, 0]
    assert ours == pytest.approx(1.0, abs=1e-6)
    record_property("atlbench", float(ours))
    theirs = _peer_values(model, loader, record_property)
    print(f"\nLinear vs itself + 3000: truth 1, atlbench {ours:.6f}, "
          + _listed(theirs))  # fmt: skip
