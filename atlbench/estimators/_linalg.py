"""Dense kernels shared by the estimators: Gram matrices, centring, class statistics, solves.

Precision policy: the passes over the N x D features (Gram matrix, class sums, projections) run in
the features' own precision, float32 for float32 input (:func:`~._validate.input_dtype`); the
D x D factorizations and everything after them run in float64, because the spectra of real features
span many decades and a float32 eigendecomposition gets the small eigenvalues wrong by percents.

The Gram matrix is formed from *centred* features and the mean is added back in float64: for
features with a large mean (ReLU outputs) an uncentred float32 Gram carries an error of about
eps32 x N |mean|^2 in every direction, which swamps the within-class spectrum. Centring happens
block by block inside the accumulation (:class:`GramSum`), so no centred copy of the N x D
features is ever stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import blas
from scipy.sparse.linalg import eigsh

F64 = torch.float64


def gram(x: torch.Tensor, *, outer: bool = False) -> torch.Tensor:
    """``x^T x`` (``x x^T`` when ``outer``) as a full symmetric matrix in x's dtype.

    On the CPU this is BLAS ``syrk``: one triangle only, half the flops of the general product that
    ``x.T @ x`` dispatches to.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        a = x.contiguous().numpy()
        syrk = blas.ssyrk if x.dtype == torch.float32 else blas.dsyrk
        # a.T is a Fortran-ordered view (no copy): A A^T = x^T x and A^T A = x x^T.
        c = torch.from_numpy(syrk(1.0, a.T, trans=1 if outer else 0))
        return c.triu() + c.triu(1).T
    return x @ x.T if outer else x.T @ x


def row_blocks(x: torch.Tensor, nbytes: int = 1 << 24) -> list[slice]:
    """Row slices of about ``nbytes`` each: elementwise passes over N x D in blocks keep their
    temporaries small (fresh 100 MB buffers cost more in page faults than the arithmetic)."""
    rows = max(1, nbytes // max(1, x.shape[1] * x.element_size()))
    return [slice(i, min(i + rows, x.shape[0])) for i in range(0, x.shape[0], rows)]


def column_sums(x: torch.Tensor) -> torch.Tensor:
    """Column sums of x as float64 (one matrix-vector product in x's dtype)."""
    return (torch.ones(1, x.shape[0], dtype=x.dtype, device=x.device) @ x)[0].to(F64)


def noise_floor(trace: float, size: int, n: int, d: int, dtype: torch.dtype) -> float:
    """Absolute round-off level of the eigenvalues of a Gram matrix accumulated in ``dtype``.

    Measured on N=20000, D=2048 float32 ReLU-like features (spectrum over 7 decades): eigenvalue
    errors of about eps x mean eigenvalue (trace / size); sqrt(max(n, d)) is the safety factor.
    Directions below it are treated as null.
    """
    return math.sqrt(max(n, d)) * torch.finfo(dtype).eps * trace / size


def rank_threshold(lam: torch.Tensor, trace: float, n: int, d: int, dtype: torch.dtype) -> float:
    """Eigenvalues of a Gram matrix above this are kept: the usual max(n, d) eps lam_max of the
    float64 path, raised to the accumulation noise floor when the Gram was formed in float32."""
    base = float(lam.max().clamp_min(0)) * max(n, d) * torch.finfo(F64).eps
    return max(base, noise_floor(trace, lam.numel(), n, d, dtype))


class GramSum:
    """Accumulates ``sum_b a_b^T a_b`` over row blocks (BLAS syrk with beta = 1 on the CPU)."""

    def __init__(self) -> None:
        self._c: np.ndarray | torch.Tensor | None = None  # numpy on the CPU (syrk), else torch

    def add(self, a: torch.Tensor) -> None:
        if a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64):
            syrk = blas.ssyrk if a.dtype == torch.float32 else blas.dsyrk
            at = a.contiguous().numpy().T
            if self._c is None:
                self._c = syrk(1.0, at)
            else:
                self._c = syrk(1.0, at, beta=1.0, c=self._c, overwrite_c=1)
        elif self._c is None:
            self._c = a.T @ a
        else:
            assert isinstance(self._c, torch.Tensor)  # blocks of one matrix share a device
            self._c.addmm_(a.T, a)

    def result(self) -> torch.Tensor:
        """The full symmetric sum as float64."""
        if isinstance(self._c, np.ndarray):
            c = self._c.astype(np.float64)  # upper triangle filled, lower zero
            c += np.triu(c, 1).T
            return torch.from_numpy(c)
        assert self._c is not None, "no rows were added"
        return self._c.to(F64)


@dataclass(frozen=True)
class Moments:
    """First and second moments of features F (N x D) from one blocked pass; all float64.

    ``shift`` is a float32-accurate mean that the blocks subtract before the Gram accumulation
    (no centred copy of F is stored); ``resid`` the column sums of ``F - shift``, so the exact mean
    is ``shift + resid / N``; ``scatter = (F - 1 mean^T)^T (F - 1 mean^T)``; ``sums`` the class
    sums of ``F - shift`` when labels were given.
    """

    n: int
    shift: torch.Tensor
    resid: torch.Tensor
    scatter: torch.Tensor
    sums: torch.Tensor | None

    @property
    def mean(self) -> torch.Tensor:
        return self.shift + self.resid / self.n


def moments(f: torch.Tensor, y: torch.Tensor | None = None, c: int = 0) -> Moments:
    """Centre f block by block, accumulating the D x D Gram, column sums and class sums."""
    n, d = f.shape
    shift = column_sums(f) / n
    shift_f = shift.to(f.dtype)
    acc = GramSum()
    resid = torch.zeros(d, dtype=F64, device=f.device)
    sums = None if y is None else torch.zeros(c, d, dtype=f.dtype, device=f.device)
    for rows in row_blocks(f):
        fc = f[rows] - shift_f
        acc.add(fc)
        if sums is None or y is None:  # both or neither
            resid += column_sums(fc)
        else:
            sums.index_add_(0, y[rows], fc)
    if sums is not None:
        resid = sums.to(F64).sum(0)
    scatter = acc.result() - torch.outer(resid, resid) / n
    return Moments(n, shift, resid, scatter, None if sums is None else sums.to(F64))


def centred_rows_gram(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For N <= D: (fc, shift, G) with fc = F - shift (F's dtype), G the N x N float64 Gram of
    the exactly centred rows. N x D is at most D x D here, so the centred copy is cheap."""
    n = f.shape[0]
    shift = column_sums(f) / n
    fc = f - shift.to(f.dtype)
    rho = column_sums(fc) / n
    g = gram(fc, outer=True).to(F64)
    v = fc.to(F64) @ rho
    return fc, shift, g - v[:, None] - v[None, :] + float(rho @ rho)


@dataclass(frozen=True)
class Centred:
    """Sample coordinates for the LDA-type estimators, centred on the fly.

    ``x - shift - offset`` (N x r) has zero column means and the inner products of the centred
    features; ``x`` is F itself (``shift`` subtracted block by block, in F's dtype) or, when
    N <= D, the principal coordinates of the centred rows (r <= N - 1): every class mean,
    within-class scatter and discriminant those estimators use lies in that span, so nothing
    changes but the cost (no D x D factorization). ``scatter`` is the r x r scatter matrix, ``dim``
    the features' D, ``sums`` the class sums of ``x - shift`` (float64).
    """

    x: torch.Tensor
    shift: torch.Tensor
    offset: torch.Tensor
    scatter: torch.Tensor
    sums: torch.Tensor
    dim: int
    diagonal: bool  # scatter is diag(eigenvalues), sorted descending

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def blocks(self, centre_fully: bool = False):
        """(rows, x[rows] - shift [- offset]) in x's dtype, block by block."""
        sub = self.shift + self.offset if centre_fully else self.shift
        sub = sub.to(self.x.dtype)
        for rows in row_blocks(self.x):
            yield rows, self.x[rows] - sub

    def centred_rows(self) -> torch.Tensor:
        """``x - shift - offset`` in float64 (N x r); for the small reduced coordinates."""
        return self.x.to(F64) - (self.shift + self.offset)


def centred_space(f: torch.Tensor, y: torch.Tensor, c: int) -> Centred:
    n, d = f.shape
    if n > d:
        m = moments(f, y, c)
        assert m.sums is not None
        return Centred(f, m.shift, m.resid / n, m.scatter, m.sums, d, False)
    _, _, g = centred_rows_gram(f)
    lam, u = eigh(g)
    keep = lam > rank_threshold(lam, float(torch.trace(g)), n, d, f.dtype)
    lam, u = lam[keep].flip(0), u[:, keep].flip(1)
    coords = u * lam.sqrt()
    zero = torch.zeros(lam.numel(), dtype=F64, device=f.device)
    sums = class_sums(coords, y, c)
    return Centred(coords, zero, zero, torch.diag(lam), sums, d, True)


def eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenpairs (ascending) of a symmetric float64 matrix; LAPACK syevd via SciPy on the CPU
    (10-15 % faster here than torch's), torch elsewhere."""
    if a.device.type == "cpu":
        lam, v = scipy.linalg.eigh(a.numpy(), driver="evd", check_finite=False)
        return torch.from_numpy(lam), torch.from_numpy(v)
    return torch.linalg.eigh(a)


def top_eigh(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest eigenpairs of a symmetric float64 matrix, descending (values, vectors)."""
    d = a.shape[0]
    if a.device.type == "cpu" and k < d:
        lam, v = scipy.linalg.eigh(
            a.numpy(), subset_by_index=[d - k, d - 1], driver="evr", check_finite=False
        )
        lam, v = torch.from_numpy(lam), torch.from_numpy(np.ascontiguousarray(v))
    else:
        lam, v = torch.linalg.eigh(a)
        lam, v = lam[d - k :], v[:, d - k :]
    return lam.flip(0), v.flip(1)


def principal_coordinates(cs: Centred, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections (N x k, float64) of the centred samples on the k leading principal axes and the
    scatter eigenvalues along them (k,). Axis signs are arbitrary."""
    k = min(k, cs.x.shape[1])
    if cs.diagonal:
        return cs.centred_rows()[:, :k], cs.scatter.diagonal()[:k]
    lam, v = top_eigh(cs.scatter, k)
    return project(cs, v), lam


def largest_eigenvalue(a: torch.Tensor) -> float:
    """Largest eigenvalue of a symmetric float64 matrix (Lanczos on the CPU for large ones)."""
    d = a.shape[0]
    if a.device.type == "cpu" and d > 256:
        v0 = np.full(d, 1.0 / math.sqrt(d))
        # ARPACK's tol is conservative: 1e-8 still gives ~1e-15 here, in ~110 matvecs.
        return float(eigsh(a.numpy(), k=1, which="LA", v0=v0, tol=1e-8)[0][0])
    return float(torch.linalg.eigvalsh(a)[-1])


def class_sums(x: torch.Tensor, y: torch.Tensor, c: int) -> torch.Tensor:
    """Per-class row sums (C x r, float64) of x for labels y in 0..c-1."""
    out = torch.zeros(c, x.shape[1], dtype=x.dtype, device=x.device)
    return out.index_add_(0, y, x).to(F64)


def class_stats(cs: Centred, y: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts (C,), class means of the centred coordinates (C x r)), float64."""
    counts = torch.bincount(y, minlength=c).to(F64)
    return counts, cs.sums / counts[:, None] - cs.offset


def within_scatter(
    total: torch.Tensor, n: int, counts: torch.Tensor, cmeans: torch.Tensor
) -> torch.Tensor:
    """Pooled within-class covariance ``S_w = sum_c (n_c / N) cov_c`` (biased) from the total
    scatter (N x covariance) and the centred class means."""
    return total / n - (cmeans.T * (counts / n)) @ cmeans


def shrink(s: torch.Tensor, lam: float, dim: int) -> torch.Tensor:
    """``(1 - lam) S + lam tr(S) / dim I``: shrinkage towards the scaled identity (dim = the
    features' D, so the reduced N <= D coordinates shrink exactly as the full matrix would)."""
    out = (1.0 - lam) * s
    out.diagonal().add_(lam * float(torch.trace(s)) / dim)
    return out


def psd_solve(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """``a^-1 b`` for a symmetric PSD float64 matrix by Cholesky.

    When a pivot falls to the round-off ``floor`` (rank-deficient or float32-accumulated
    matrices), ``a + floor I`` is factorized instead: directions below the floor get a ridge at the
    noise level rather than an inverse of noise. For right-hand sides inside the range of ``a``
    this is the pseudo-inverse solution up to O(floor / eigenvalue).
    """
    d = a.shape[0]
    floor = max(floor, float(a.diagonal().abs().max()) * d * torch.finfo(F64).eps)
    chol = _cholesky(a)
    if chol is None or float(chol.diagonal().min()) ** 2 <= floor:
        reg = a.clone()
        reg.diagonal().add_(floor)
        chol = _cholesky(reg)
        if chol is None:
            raise ValueError("scatter matrix is not positive semi-definite (non-finite features?)")
    return torch.cholesky_solve(b, chol)


def _cholesky(a: torch.Tensor) -> torch.Tensor | None:
    """Lower Cholesky factor, or None when a is not numerically positive definite (LAPACK potrf
    via SciPy on the CPU, about 25 % faster here than torch's)."""
    if a.device.type == "cpu":
        try:
            return torch.from_numpy(
                scipy.linalg.cholesky(a.numpy(), lower=True, check_finite=False)
            )
        except np.linalg.LinAlgError:
            return None
    chol, info = torch.linalg.cholesky_ex(a)
    return chol if int(info) == 0 else None


def lda_logits(
    xw: torch.Tensor, w: torch.Tensor, cmeans: torch.Tensor, priors: torch.Tensor
) -> torch.Tensor:
    """Linear-discriminant logits ``x^T W mu_c - mu_c^T W mu_c / 2 + log pi_c`` (N x C).

    ``w = S^-1 [mu_1 .. mu_C]`` (r x C); ``xw`` the products ``(x - offset) W`` for centred rows.
    Any common origin for x and the means gives the same posteriors (the difference is a per-row
    constant), so centred coordinates are used throughout.
    """
    quad = (cmeans * w.T).sum(1)
    return xw - 0.5 * quad + torch.log(priors)


def project(cs: Centred, w: torch.Tensor) -> torch.Tensor:
    """``(x - shift - offset) W`` (N x C, float64); the N x r x C product runs block by block in
    the coordinates' dtype, on centred blocks (no large-mean cancellation)."""
    wd = w.to(cs.x.dtype)
    out = torch.empty(cs.n, w.shape[1], dtype=F64, device=w.device)
    for rows, xb in cs.blocks():
        out[rows] = (xb @ wd).to(F64)
    return out - cs.offset @ w
