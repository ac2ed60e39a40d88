"""Layer similarity with centred kernel alignment (CKA).

Three levels, from plain functions to model hooks:

* :func:`linear_cka` and :func:`rbf_cka` compare two feature matrices (N x D1, N x D2) held in
  memory (Kornblith et al., 2019, "Similarity of Neural Network Representations Revisited").
* :class:`MinibatchCKA` accumulates the HSIC numerator and both denominators over minibatches
  (Nguyen et al., 2021, "Do Wide and Deep Networks Learn the Same Things?"), so a whole dataset
  is compared without ever forming an N x N Gram matrix. With ``debiased=True`` each batch uses the
  unbiased HSIC estimator of Song et al. (2012), which makes the sum over batches an unbiased
  estimate of the population HSIC, independent of the batch size.
* :func:`cka_matrix` hooks named modules of two models and fills an L_a x L_b CKA matrix with one
  forward pass per batch per model; :func:`auto_layers` (from :mod:`atlbench._layer_features`,
  which model code shares) picks the block outputs of timm and Hugging Face models.

All reductions run in float64 on the device of the features (CUDA stays on CUDA; MPS, which has no
float64, computes Grams in float32 and accumulates on the CPU). The model hooks multiply each
batch Gram in float32 by default (``precision="float32"``: float32 activations, half the cost, CKA
within about 1e-6 of float64) and sum the HSIC terms in float64; ``precision="float64"`` is exact
to rounding. They centre a layer's features before its Gram only while the layer's mean offset is
large enough for a raw Gram to lose digits (see :class:`_Recorder`); elsewhere the pass is
skipped, which the debiased estimator does not notice. Results are not clipped to [0, 1]: the
debiased estimate can leave that range slightly on small samples, and hiding that would hide
noise.

On the CPU the batch Grams are the whole cost of the CKA work (97% of it for resnet18 blocks),
and they are formed with BLAS ``syrk`` (one triangle of the symmetric product: half the
multiply-adds of ``torch.mm``, see :func:`_self_product`). :func:`cka_matrix` also stops each
forward pass once every hooked layer has run (the head is not needed) and, for two CPU models of
one architecture, runs their passes side by side on half the threads each (:func:`_twins`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from atlbench._layer_features import auto_layers, first_tensor, pool_output

__all__ = [
    "CKAResult",
    "MinibatchCKA",
    "auto_layers",
    "cka_matrix",
    "linear_cka",
    "rbf_cka",
]

ArrayLike = np.ndarray | torch.Tensor
# a batch Gram and, when the features were centred first, the energy centring removed
_GramPart = tuple[torch.Tensor, torch.Tensor | None]


# --------------------------------------------------------------------------------------------
# numerical core
# --------------------------------------------------------------------------------------------


def _as_tensor(x: ArrayLike, what: str) -> torch.Tensor:
    """Wrap numpy without copying; torch tensors keep their device."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N x D) array, got shape {tuple(t.shape)}")
    return t.detach()


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _centre(x: torch.Tensor) -> torch.Tensor:
    """Centre columns; rows of a constant layer become exactly zero.

    Subtracting a float mean from identical values leaves rounding residue that would otherwise
    turn an undefined CKA (0/0) into noise, so a layer whose centred energy is at rounding level
    relative to its raw energy is set to zero and reported as NaN downstream.
    """
    flat = x.reshape(-1)
    raw = float(torch.dot(flat, flat))  # one BLAS pass; NaN/inf anywhere make it non-finite
    if not np.isfinite(raw):
        raise ValueError("features contain NaN or inf")
    xc = x - x.mean(dim=0, keepdim=True)
    eps = torch.finfo(x.dtype).eps
    flat_c = xc.reshape(-1)
    if float(torch.dot(flat_c, flat_c)) <= (64 * eps) ** 2 * raw:
        xc = torch.zeros_like(xc)
    return xc


def _prepare(x: ArrayLike, what: str) -> torch.Tensor:
    t = _as_tensor(x, what)
    t = t.to(_work_dtype(t.device))
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or inf")
    return t


def _hsic_pair(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> tuple[float, float, float]:  # noqa: E741
    """HSIC(k, l), HSIC(k, k), HSIC(l, l) for two n x n Grams.

    Biased: <HKH, HLH> / (n-1)^2; callers pass centred Grams (HKH). Debiased: the U-statistic of
    Song et al. (2012) on Grams with zero diagonal, tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2))
    - 2/(n-2) 1'K~L~1, over n(n-3), using tr(K~L~) = <K, L> - <diag K, diag L> and
    K~1 = K1 - diag K so that K is never copied.
    """
    n = k.shape[0]

    def dot(p: torch.Tensor, q: torch.Tensor) -> float:
        return float(torch.dot(p.reshape(-1), q.reshape(-1)))

    if not debiased:
        scale = 1.0 / (n - 1) ** 2
        return dot(k, l) * scale, dot(k, k) * scale, dot(l, l) * scale
    c2, c3, norm = 1.0 / ((n - 1) * (n - 2)), 2.0 / (n - 2), 1.0 / (n * (n - 3))
    parts = []
    for g in (k, l):
        diag = g.diagonal()
        rows = g.sum(1) - diag
        parts.append((g, diag, rows, float(rows.sum())))

    def hsic(p: tuple, q: tuple) -> float:
        return (dot(p[0], q[0]) - dot(p[1], q[1]) + p[3] * q[3] * c2 - c3 * dot(p[2], q[2])) * norm

    pk, pl = parts
    return hsic(pk, pl), hsic(pk, pk), hsic(pl, pl)


def _ratio(xy: float, xx: float, yy: float, what: str) -> float:
    if not (xx > 0 and yy > 0):
        warnings.warn(
            f"CKA is undefined for {what}: a representation has zero (or, debiased, non-positive)"
            " self-similarity, e.g. constant features; returning NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return float("nan")
    return xy / float(np.sqrt(xx) * np.sqrt(yy))


def _check_pair(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> int:
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y need the same number of examples, got {n} and {y.shape[0]}")
    if n < (4 if debiased else 2):
        raise ValueError(f"CKA needs at least {4 if debiased else 2} examples, got {n}")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")
    return n


def linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same N examples.

    Uses ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) on centred features when both widths are below N
    (cost N*D^2, no N x N matrix) and the Gram form otherwise (cost N^2*D). ``debiased`` swaps in
    the unbiased HSIC estimator, which removes the upward bias of CKA for wide, few-sample
    representations. Returns NaN with a warning when a side is constant.
    """
    xt, yt = _prepare(x, "x"), _prepare(y, "y")
    n = _check_pair(xt, yt, debiased)
    xc, yc = _centre(xt), _centre(yt)
    if max(xc.shape[1], yc.shape[1]) < n:
        xy = float(torch.linalg.matrix_norm(yc.T @ xc) ** 2)
        xx = float(torch.linalg.matrix_norm(xc.T @ xc) ** 2)
        yy = float(torch.linalg.matrix_norm(yc.T @ yc) ** 2)
        if debiased:
            # Centred features give K~1 = -diag(K), so every correction term needs only the
            # squared row norms (the identity behind Kornblith et al.'s feature-space estimator).
            a, b = (xc * xc).sum(1), (yc * yc).sum(1)
            c2, c3 = 1.0 / ((n - 1) * (n - 2)), n / (n - 2)
            sa, sb = float(a.sum()), float(b.sum())
            xy += sa * sb * c2 - c3 * float(a @ b)
            xx += sa * sa * c2 - c3 * float(a @ a)
            yy += sb * sb * c2 - c3 * float(b @ b)
        return _ratio(xy, xx, yy, "x vs y")
    return _ratio(*_hsic_pair(xc @ xc.T, yc @ yc.T, debiased), "x vs y")


def _rbf_gram(x: torch.Tensor, sigma: float) -> torch.Tensor | None:
    xc = x - x.mean(0, keepdim=True)  # distances are shift invariant; centring helps rounding
    sq_norms = (xc * xc).sum(1)
    sq = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (xc @ xc.T)).clamp_min_(0.0)
    sq.fill_diagonal_(0.0)
    iu = torch.triu_indices(sq.shape[0], sq.shape[0], offset=1, device=sq.device)
    median = float(torch.quantile(sq[iu[0], iu[1]].sqrt(), 0.5))
    if median <= 0.0:
        return None
    return torch.exp(-sq / (2.0 * (sigma * median) ** 2))


def rbf_cka(x: ArrayLike, y: ArrayLike, sigma: float = 0.8, debiased: bool = False) -> float:
    """CKA with Gaussian kernels, bandwidth ``sigma`` times the median pairwise distance.

    The median is over distinct pairs (i < j), so the bandwidth adapts to each representation's
    scale as in Kornblith et al. (2019); the kernel is exp(-d^2 / (2 (sigma * median)^2)).
    Needs N x N Grams, so it is meant for in-memory feature matrices, not whole datasets.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    xt, yt = _prepare(x, "x"), _prepare(y, "y")
    _check_pair(xt, yt, debiased)
    kx, ky = _rbf_gram(xt, sigma), _rbf_gram(yt, sigma)
    if kx is None or ky is None:
        return _ratio(0.0, 0.0, 0.0, "x vs y")
    if not debiased:
        kx = kx - kx.mean(0, keepdim=True) - kx.mean(1, keepdim=True) + kx.mean()
        ky = ky - ky.mean(0, keepdim=True) - ky.mean(1, keepdim=True) + ky.mean()
    return _ratio(*_hsic_pair(kx, ky, debiased), "x vs y")


# --------------------------------------------------------------------------------------------
# minibatch accumulation
# --------------------------------------------------------------------------------------------


def _flat(x: ArrayLike) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach()
    return t.reshape(t.shape[0], -1) if t.ndim != 2 else t


def _gram_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype a batch Gram is multiplied in; its HSIC terms are always summed in float64.

    ``"float32"`` halves the cost of the one expensive step (n x n x D) for float32 activations
    and keeps the CKA within about 1e-6 of the float64 value, far below its sampling noise. On
    CUDA with TF32 matmuls switched on, float32 products would lose about three digits, so the
    Gram falls back to float64 there.
    """
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    if device.type == "mps" or (
        precision == "float32"
        and not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)
    ):
        return torch.float32
    return torch.float64


def _self_product(x: torch.Tensor) -> torch.Tensor:
    """``x @ x.T`` at half the cost on the CPU.

    A Gram matrix is symmetric, so BLAS ``syrk`` computes one triangle: half the multiply-adds
    of the general product. torch has no symmetric path (``torch.mm`` does all n^2 D), but
    numpy's matmul recognises ``a @ a.T`` on one buffer and calls ``syrk``, then mirrors the
    triangle; on CPU tensors the round trip is zero-copy. Its BLAS should run on one thread
    (:func:`_blas_single_thread`): with more, idle BLAS workers spin against torch's own pool.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        a = x.contiguous().numpy()
        return torch.from_numpy(a @ a.T)
    return torch.mm(x, x.T)


_BLAS_CONTROLLER: Any = None


def _blas_single_thread() -> Any:
    """Limit numpy's BLAS to one thread for a ``with`` block (about 10 us to enter).

    Running the Gram products of :func:`_self_product` on one core costs about what
    ``torch.mm`` on two does on an idle machine, and far less on a busy one: torch's OpenMP
    workers and a multi-threaded BLAS spin-wait against each other between calls (measured
    5x slower on 2 shared cores).
    """
    global _BLAS_CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def _centred_gram(feat: torch.Tensor, dtype: torch.dtype) -> _GramPart:
    """Gram matrix of one batch's centred features in ``dtype``, and n * ||mean||^2.

    Both are fresh tensors (never views of ``feat``). The second term is what centring removed
    from the raw energy, so :func:`_layer_hsic` can tell a constant layer from a varying one.
    Only the few ops that scale with the layer width run here; the rest runs on the whole stack.
    """
    x = feat.to(dtype)
    mean = x.mean(dim=0)
    xc = x - mean
    return _self_product(xc), torch.dot(mean, mean) * x.shape[0]


def _raw_gram(feat: torch.Tensor, dtype: torch.dtype) -> _GramPart:
    """Gram matrix of one batch's features as they are: one product, no centring pass.

    The debiased HSIC is unchanged when every feature is shifted by a constant, so the raw Gram
    gives the same estimate; the biased one is centred on the [L, n, n] stack. Rounding is the
    price: a float32 product of features with mean offset rho (raw over centred energy) loses
    about rho ulps, which is why :class:`_Recorder` uses it only where rho is small.
    """
    x = feat if feat.dtype == dtype else feat.to(dtype)
    return _self_product(x), None


# Largest raw-over-centred energy ratio, 1 + n ||mean||^2 / centred energy, at which a hooked
# layer skips the centring pass. At 8 the extra rounding of a float32 raw Gram stayed below 3e-7
# in CKA (timm resnet18 blocks, ratios 5-8); at 100 it reached 3e-6 and at 1e4 7e-4. The same
# limit serves float64 Grams, where the debiased HSIC's cancellation grows as eps * ratio^2.
_MAX_RAW_OFFSET = 8.0


def _sq_norms(rows: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(rows, dim=1).square_()


def _layer_hsic(
    parts: Sequence[_GramPart], n_a: int, debiased: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """HSIC(a_i, b_j), HSIC(a_i, a_i), HSIC(b_j, b_j) for one batch's layer Grams, and each
    layer's raw-over-centred energy ratio (inf for a constant layer).

    ``parts`` holds model a's ``n_a`` layers, then model b's; with only ``n_a`` parts, a is
    compared with itself. Parts come from :func:`_centred_gram` (offset term given) or
    :func:`_raw_gram` (None); the formulas are those of :func:`_hsic_pair`. The debiased HSIC
    does not change when features are shifted by a constant, so raw Grams enter as they are; for
    the biased one they are double-centred first. The cross terms come from one product of the
    flattened Grams plus a rank-(2n+1) correction, never an L_a x L_b x n x n tensor.

    The per-layer energies cross to the host once (the batch's one sync): non-finite features
    raise here, and a layer whose centred energy is at rounding level relative to its raw energy
    (a constant layer, where centring leaves only rounding residue) gets zero HSIC, so its CKA
    comes out NaN instead of noise.
    """
    device = parts[0][0].device  # model b's features may live elsewhere
    grams = torch.stack([g.to(device) for g, _ in parts])
    eps = torch.finfo(grams.dtype).eps
    grams = grams.to(_work_dtype(device))
    n, count = grams.shape[-1], grams.shape[0]
    diag = grams.diagonal(dim1=-2, dim2=-1)  # [L, n] view
    row_sums = grams.sum(-1)
    trace, total = diag.sum(-1), row_sums.sum(-1)
    offsets = [o for _, o in parts if o is not None]
    energies = [trace, total] + ([torch.stack(offsets).to(trace)] if offsets else [])
    host = torch.cat(energies).tolist()  # the batch's one host sync
    traces, totals, centring = host[:count], host[count : 2 * count], iter(host[2 * count :])
    ratios, constant, bad = [], [], []
    for i, (_, offset) in enumerate(parts):
        if offset is None:  # residue of a constant layer: ~eps * raw energy
            raw, centred, tol = traces[i], traces[i] - totals[i] / n, 64 * eps
        else:  # centred features: ~eps^2 * raw energy
            raw, centred, tol = traces[i] + next(centring), traces[i], (64 * eps) ** 2
        if not math.isfinite(raw):
            bad.append(i)
        constant.append(centred <= tol * raw)
        ratios.append(raw / centred if centred > 0 else math.inf)
    if bad:
        in_b = [i - n_a for i in bad if i >= n_a] if count > n_a else bad
        raise ValueError(
            f"features contain NaN or inf (layers a{[i for i in bad if i < n_a]} / b{in_b})"
        )
    if not debiased and any(o is None for _, o in parts):
        rows = grams.mean(-1, keepdim=True)
        grams = grams - rows - rows.transpose(-1, -2) + rows.mean(-2, keepdim=True)
    cross = len(parts) > n_a

    def split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return t[:n_a], (t[n_a:] if cross else t)

    fa, fb = split(grams.reshape(grams.shape[0], -1))
    xy = fa @ fb.T
    # of the a-a and b-b blocks only the diagonals are needed: squared norms, the fastest pass
    xx, yy = (_sq_norms(fa), _sq_norms(fb)) if cross else (None, None)
    if debiased:
        rows = row_sums - diag  # K~1
        ones = (total - trace)[:, None]  # 1'K~1
        c2, c3 = 1.0 / ((n - 1) * (n - 2)), 2.0 / (n - 2)
        left_a, left_b = split(torch.cat([diag, rows, ones], dim=1))
        right_a, right_b = split(torch.cat([diag, rows * c3, ones * -c2], dim=1))
        xy.addmm_(left_a, right_b.T, alpha=-1.0)
        if xx is not None and yy is not None:
            xx -= torch.linalg.vecdot(left_a, right_a)
            yy -= torch.linalg.vecdot(left_b, right_b)
        scale = 1.0 / (n * (n - 3))
    else:
        scale = 1.0 / (n - 1) ** 2
    xy.mul_(scale)
    if xx is None or yy is None:
        xx = yy = xy.diagonal()
    else:
        xx.mul_(scale)
        yy.mul_(scale)
    if any(constant):
        const_a, const_b = constant[:n_a], constant[n_a:] if cross else constant
        mask_a = torch.tensor(const_a, device=xy.device)
        mask_b = torch.tensor(const_b, device=xy.device)
        xy[mask_a] = 0.0
        xy[:, mask_b] = 0.0
        if cross:
            xx[mask_a] = 0.0
            yy[mask_b] = 0.0
    return xy, xx, yy, ratios


class MinibatchCKA:
    """Accumulates an L_a x L_b CKA matrix over minibatches.

    Each :meth:`update` adds the batch's HSIC(a_i, b_j), HSIC(a_i, a_i) and HSIC(b_j, b_j) to
    float64 running sums; :meth:`compute` divides once. Dividing per batch and averaging (or
    keeping the last batch) would weight batches unequally and is not an estimate of CKA.

    Batches of at most 3 examples (the unbiased estimator divides by n - 3) are held back and
    prepended to the next batch given to :meth:`update`; held examples never used are reported
    by :meth:`compute`. Features with more than two dimensions are flattened.
    """

    def __init__(self, debiased: bool = True, precision: str = "float64") -> None:
        _gram_dtype(torch.device("cpu"), precision)  # validate early
        self.debiased = debiased
        self.precision = precision
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._xy: torch.Tensor | None = None
        self._xx: torch.Tensor | None = None
        self._yy: torch.Tensor | None = None
        self._pending: tuple[list[torch.Tensor], list[torch.Tensor] | None] | None = None
        self.n_examples = 0
        self.n_batches = 0

    @property
    def shape(self) -> tuple[int, int] | None:
        """(L_a, L_b) once the first batch has been seen."""
        return None if self._xy is None else (self._xy.shape[0], self._xy.shape[1])

    def update(
        self, feats_a: Sequence[ArrayLike], feats_b: Sequence[ArrayLike] | None = None
    ) -> None:
        """Add one batch: per-layer features (n x ...) of model a and, optionally, model b.

        Without ``feats_b`` the matrix compares model a's layers with themselves.
        """
        fa = [_flat(f) for f in feats_a]
        fb = None if feats_b is None else [_flat(f) for f in feats_b]
        if not fa or (fb is not None and not fb):
            raise ValueError("need at least one layer on each side")
        if self._pending is not None:
            pa, pb = self._pending
            if (pb is None) != (fb is None):
                raise ValueError("feats_b must be given for every batch or for none")
            fa = [torch.cat([p.to(f.device, f.dtype), f]) for p, f in zip(pa, fa, strict=True)]
            if fb is not None and pb is not None:
                fb = [torch.cat([p.to(f.device, f.dtype), f]) for p, f in zip(pb, fb, strict=True)]
            self._pending = None
        n = fa[0].shape[0]
        if any(f.shape[0] != n for f in [*fa, *(fb or [])]):
            raise ValueError("all layers of a batch must have the same number of examples")
        if n <= 3:
            self._pending = (
                [f.clone() for f in fa],
                None if fb is None else [f.clone() for f in fb],
            )
            return
        dtype = _gram_dtype(fa[0].device, self.precision)
        with _blas_single_thread():
            parts = [_centred_gram(f, dtype) for f in [*fa, *(fb or [])]]
        self._accumulate(*_layer_hsic(parts, len(fa), self.debiased)[:3], n)

    def _accumulate(self, xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor, n: int) -> None:
        """Add one batch's HSIC terms (see :func:`_layer_hsic`)."""
        acc_device = torch.device("cpu") if xy.device.type == "mps" else xy.device
        # copies: the three may be views of one matrix, and the running sums are added in place
        xy, xx, yy = (t.to(acc_device, torch.float64, copy=True) for t in (xy, xx, yy))
        if self._xy is None:
            self._xy, self._xx, self._yy = xy, xx, yy
        else:
            if xy.shape != self._xy.shape:
                raise ValueError(f"batch has {tuple(xy.shape)} layers, expected {self.shape}")
            assert self._xx is not None and self._yy is not None  # set together with _xy
            self._xy += xy
            self._xx += xx
            self._yy += yy
        self.n_examples += n
        self.n_batches += 1

    def compute(self) -> np.ndarray:
        """CKA matrix [L_a, L_b] as float64 numpy; NaN (with a warning) where undefined."""
        if self._pending is not None:
            warnings.warn(
                f"{self._pending[0][0].shape[0]} trailing example(s) in a batch of <= 3 were not"
                " used (HSIC needs more than 3 examples per batch)",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._xy is None or self._xx is None or self._yy is None:
            raise ValueError("no batch with more than 3 examples has been accumulated")
        xy = self._xy.cpu().numpy()
        xx, yy = self._xx.cpu().numpy(), self._yy.cpu().numpy()
        bad_a, bad_b = np.flatnonzero(~(xx > 0)), np.flatnonzero(~(yy > 0))
        if bad_a.size or bad_b.size:
            warnings.warn(
                f"CKA is undefined (NaN) for layers a{bad_a.tolist()} / b{bad_b.tolist()}:"
                " constant features (zero self-similarity)",
                RuntimeWarning,
                stacklevel=2,
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            denom = (
                np.sqrt(np.where(xx > 0, xx, np.nan))[:, None]
                * np.sqrt(np.where(yy > 0, yy, np.nan))[None, :]
            )
            return xy / denom


# --------------------------------------------------------------------------------------------
# model hooks
# --------------------------------------------------------------------------------------------


@dataclass
class CKAResult:
    """CKA between every hooked layer of model a (rows) and model b (columns)."""

    matrix: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    n_examples: int

    def to_frame(self) -> Any:
        """The matrix as a pandas DataFrame indexed by layer names."""
        import pandas as pd

        return pd.DataFrame(self.matrix, index=self.layers_a, columns=self.layers_b)


class _StopForward(BaseException):
    """Ends a hooked forward pass early (a BaseException, so ``except Exception`` in model code
    does not swallow it, as with ``asyncio.CancelledError``)."""


class _Recorder:
    """Forward hooks that reduce each hooked output to its batch Gram matrix at once.

    The Gram is computed inside the hook, before any later in-place op (e.g. ``ReLU(inplace=True)``)
    can overwrite the output, and it is a new tensor, so nothing aliases the model's activations;
    only n x n per layer is kept instead of full feature maps.

    Centring the features costs a pass over them, about a fifth of the Gram product itself. The
    first batch centres every layer; from then on a layer skips the pass while its last batch's
    raw-over-centred energy ratio stayed under ``_MAX_RAW_OFFSET`` (:meth:`adapt`), so only
    layers with a large mean offset, where a raw float32 Gram would lose digits, pay for it.

    Once armed (:meth:`arm_early_exit`), the hook of the last hooked layer to run raises
    :class:`_StopForward`: what follows it (a classifier head, a pooler) is not needed for CKA.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], precision: str) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(
                f"layers {missing} not in {type(model).__name__}.named_modules(); see auto_layers()"
            )
        self.grams: dict[str, _GramPart] = {}
        self.calls: dict[str, int] = {}
        self.mask: torch.Tensor | None = None
        self.precision = precision
        self.raw: set[str] = set()  # layers whose Gram skips the centring pass
        self._dtypes: dict[torch.device, torch.dtype] = {}  # Gram dtype per device, looked up once
        self._warned: set[str] = set()
        unique = list(dict.fromkeys(names))
        self.n_layers = len(unique)
        self.early_exit = False
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in unique]

    def _hook(self, name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is None:
                raise TypeError(f"layer {name!r} returned no tensor")
            feat = pool_output(t.detach(), self.mask)
            dtype = self._dtypes.get(feat.device)
            if dtype is None:
                dtype = self._dtypes[feat.device] = _gram_dtype(feat.device, self.precision)
            gram = _raw_gram if name in self.raw else _centred_gram
            self.grams[name] = gram(feat, dtype)
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.early_exit and len(self.grams) == self.n_layers:
                raise _StopForward

        return hook

    def start(self, mask: torch.Tensor | None) -> None:
        self.grams.clear()
        self.calls.clear()
        self.mask = mask

    def parts(self, names: Sequence[str], n: int) -> list[_GramPart]:
        """The batch's Grams of ``names``, in that order, for :func:`_layer_hsic`."""
        out = []
        for name in names:
            if name not in self.grams:
                raise RuntimeError(f"layer {name!r} did not run in the forward pass")
            if self.calls[name] > 1 and name not in self._warned:
                self._warned.add(name)
                warnings.warn(
                    f"layer {name!r} is called {self.calls[name]} times per forward pass;"
                    " using its last call",
                    RuntimeWarning,
                    stacklevel=3,
                )
            g = self.grams[name]
            if g[0].shape[0] != n:
                raise RuntimeError(f"layer {name!r} output has batch size {g[0].shape[0]}, not {n}")
            out.append(g)
        return out

    def arm_early_exit(self) -> None:
        """Stop later passes once every hooked layer has run, if each ran exactly once in the
        pass just recorded (a layer called twice is read at its last call, so it needs the whole
        pass)."""
        self.early_exit = len(self.calls) == self.n_layers and all(
            c == 1 for c in self.calls.values()
        )

    def adapt(self, names: Sequence[str], ratios: Sequence[float]) -> None:
        """Let the layers whose offset ratio is small skip centring from the next batch on."""
        for name, ratio in zip(names, ratios, strict=True):
            if ratio <= _MAX_RAW_OFFSET:
                self.raw.add(name)
            else:
                self.raw.discard(name)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _add_batch(
    acc: MinibatchCKA,
    rec_a: _Recorder,
    names_a: Sequence[str],
    side_b: tuple[_Recorder, Sequence[str]] | None,
    n: int,
) -> None:
    """Fold one batch's recorded Grams into ``acc`` and let each recorder adapt its centring.

    ``side_b`` is None when model a is compared with itself on the same layers.
    """
    parts = rec_a.parts(names_a, n)
    if side_b is not None:
        parts += side_b[0].parts(side_b[1], n)
    xy, xx, yy, ratios = _layer_hsic(parts, len(names_a), acc.debiased)
    acc._accumulate(xy, xx, yy, n)
    rec_a.adapt(names_a, ratios[: len(names_a)])
    if side_b is not None:
        side_b[0].adapt(side_b[1], ratios[len(names_a) :])


def _split_batch(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("empty batch")
        return batch[0]
    return batch


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, Mapping):
        return {k: _to_device(v, device) for k, v in inputs.items()}
    return inputs


def _batch_size(inputs: Any) -> int:
    t = first_tensor(inputs)
    if t is None or t.ndim == 0:
        raise TypeError(f"cannot find a batch tensor in {type(inputs).__name__}")
    return int(t.shape[0])


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _hooked_pass(model: nn.Module, rec: _Recorder, inputs: Any, mask: torch.Tensor | None) -> None:
    """One forward pass whose hooks record Grams; it may end at the last hooked layer."""
    rec.start(mask)
    with torch.inference_mode():  # per thread: a worker thread does not inherit the mode
        try:
            if isinstance(inputs, Mapping):
                model(**inputs)
            else:
                model(inputs)
        except _StopForward:
            pass


def _twins(model_a: nn.Module, model_b: nn.Module) -> bool:
    """Whether the two models should take each batch side by side, on half the threads each.

    Two CPU passes of one architecture (same class, same parameter shapes: equal work) use the
    cores better side by side, on half the threads each, than one after the other on all of
    them: each Gram product runs next to the other model's pass instead of leaving cores idle,
    and on a busy machine fewer threads wait at every op for the slowest of their team. A module
    shared by both would see both passes' hooks race, and GPU work is queued asynchronously
    anyway, so those run in turn. Fewer
    threads can round a convolution differently (about 1e-7 in CKA, the size of the float32
    Gram's own rounding), so ``precision="float64"`` keeps the passes as the caller runs them.
    """
    if model_a is model_b or torch.get_num_threads() < 2 or type(model_a) is not type(model_b):
        return False
    if _model_device(model_a).type != "cpu" or _model_device(model_b).type != "cpu":
        return False
    if [p.shape for p in model_a.parameters()] != [p.shape for p in model_b.parameters()]:
        return False
    seen = {id(m) for m in model_a.modules()}
    return not any(id(m) in seen for m in model_b.modules())


def cka_matrix(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Iterable[Any],
    layers_a: str | Sequence[str] = "auto",
    layers_b: str | Sequence[str] = "auto",
    debiased: bool = True,
    device: str | torch.device | None = None,
    max_batches: int | None = None,
    precision: str = "float32",
) -> CKAResult:
    """Minibatch CKA between the named layers of two models over ``data``.

    ``data`` yields tensors, dicts of tensors (passed as keyword arguments, e.g. Hugging Face
    tokenizer output) or (inputs, labels) pairs. Each batch runs once through each model (once in
    all when ``model_a is model_b``) in eval mode under ``torch.inference_mode()``; training flags
    are restored afterwards. With ``device`` the models are moved there, otherwise inputs follow
    model a's parameters. Batches with at most 3 examples are skipped with a warning.
    ``precision`` is the dtype of the batch Gram products (see :func:`_gram_dtype`); the HSIC
    sums are float64 either way. ``"float64"`` costs about twice as much on the CPU.

    From the second batch on, a pass stops after the last hooked layer. Two distinct CPU models of
    one architecture take each batch in parallel threads: for the duration of the call,
    ``torch.set_num_threads`` is halved (process-wide) and numpy's BLAS limited to one thread.
    """
    _gram_dtype(torch.device("cpu"), precision)  # validate before any forward pass
    names_a = auto_layers(model_a) if layers_a == "auto" else list(layers_a)
    names_b = auto_layers(model_b) if layers_b == "auto" else list(layers_b)
    same = model_a is model_b
    self_compare = same and names_a == names_b  # one stack serves both sides
    if device is not None:
        device = torch.device(device)
        model_a.to(device)
        model_b.to(device)
    dev = _model_device(model_a) if device is None else device
    rec_a = _Recorder(model_a, [*names_a, *names_b] if same else names_a, precision)
    rec_b = rec_a if same else _Recorder(model_b, names_b, precision)
    sides = [(model_a, rec_a)] if same else [(model_a, rec_a), (model_b, rec_b)]
    flags = (model_a.training, model_b.training)
    threads = torch.get_num_threads()
    twins = precision == "float32" and _twins(model_a, model_b)
    pool = ThreadPoolExecutor(1, "atlbench-cka") if twins else None
    acc = MinibatchCKA(debiased=debiased)
    skipped = 0
    try:
        model_a.eval()
        model_b.eval()
        if pool is not None:
            torch.set_num_threads(max(1, threads // 2))
        with torch.inference_mode(), _blas_single_thread():
            for i, batch in enumerate(data):
                if max_batches is not None and i >= max_batches:
                    break
                inputs = _split_batch(batch)
                n = _batch_size(inputs)
                if n <= 3:
                    skipped += n
                    continue
                inputs = _to_device(inputs, dev)
                mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
                if pool is None:
                    for model, rec in sides:
                        _hooked_pass(model, rec, inputs, mask)
                else:
                    other = pool.submit(_hooked_pass, model_a, rec_a, inputs, mask)
                    try:
                        _hooked_pass(model_b, rec_b, inputs, mask)
                    finally:
                        wait([other])  # its hooks must not outlive the recorders
                    other.result()
                _add_batch(acc, rec_a, names_a, None if self_compare else (rec_b, names_b), n)
                if acc.n_batches == 1:
                    for _, rec in sides:
                        rec.arm_early_exit()
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(threads)
        rec_a.remove()
        if not same:
            rec_b.remove()
        model_a.train(flags[0])
        model_b.train(flags[1])
    if skipped:
        warnings.warn(
            f"skipped {skipped} example(s) in batches of <= 3 (HSIC needs more per batch)",
            RuntimeWarning,
            stacklevel=2,
        )
    return CKAResult(acc.compute(), names_a, names_b, acc.n_examples)
