"""Shared input checks and conversions for the estimators.

Every estimator funnels its inputs through here so that bad input fails the same way everywhere,
with a message that names the argument and what was wrong. Inputs become torch tensors on the
caller's device (a CUDA tensor stays on its GPU, anything else is computed on the CPU), float64 by
default; estimators that follow the input's precision ask for :func:`input_dtype`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = Any  # numpy array, torch tensor or anything np.asarray accepts


def _device_of(x: ArrayLike) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def input_dtype(x: ArrayLike) -> torch.dtype:
    """float32 for float32 / float16 / bfloat16 input, else float64: features usually come as
    float32 and the N x D passes then run at the precision the features carry; float64 (and
    integer) input keeps the float64 path."""
    if isinstance(x, torch.Tensor):
        narrow = x.is_floating_point() and x.dtype != torch.float64
    else:
        dt = np.asarray(x).dtype
        narrow = dt.kind == "f" and dt.itemsize < 8
    return torch.float32 if narrow else torch.float64


def as_matrix(
    x: ArrayLike, name: str = "features", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A finite N x D tensor of ``dtype`` (on x's device) with N >= 2, else ValueError."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
            raise ValueError(f"{name} must be a real numeric array, got dtype {t.dtype}")
        t = t.to(dtype)
    else:
        a = np.asarray(x)
        if a.dtype.kind not in "fiub":
            raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N x D), got shape {tuple(t.shape)}")
    if t.shape[0] < 2 or t.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 rows and 1 column, got {tuple(t.shape)}")
    # min/max propagate NaN and show inf: one cheap reduction instead of an N x D bool mask.
    lo, hi = torch.aminmax(t)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf")
    return t


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)


def as_labels(labels: ArrayLike, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Labels re-indexed to 0..C-1 (so absent class ids never form empty classes) and C.

    Raises ValueError unless labels are a 1-D integer array of length n with at least 2 classes.
    """
    a = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {a.shape}")
    if a.shape[0] != n:
        raise ValueError(f"labels has {a.shape[0]} entries but there are {n} samples")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise ValueError("labels contain NaN or inf")
        if not np.all(a == np.round(a)):
            raise ValueError("labels must be integer class ids, got non-integral floats")
    elif a.dtype.kind not in "iub":
        raise ValueError(f"labels must be integer class ids, got dtype {a.dtype}")
    classes, inverse = np.unique(a, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"labels need at least 2 distinct classes, got {len(classes)}")
    return torch.from_numpy(inverse.reshape(-1).astype(np.int64)).to(device), len(classes)


def features_and_labels(
    features: ArrayLike,
    labels: ArrayLike,
    name: str = "features",
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validated (features as ``dtype``, contiguous labels, number of classes)."""
    f = as_matrix(features, name, dtype)
    y, c = as_labels(labels, f.shape[0], f.device)
    return f, y, c


def probs_and_labels(probs: ArrayLike, labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validated source-model probabilities (rows on the simplex) and contiguous labels.

    Logits passed by mistake are the common error, so rows must be non-negative and sum to 1.
    """
    p = as_matrix(probs, "probs")
    if bool((p < 0).any()):
        raise ValueError("probs must be non-negative (softmax outputs, not logits)")
    sums = p.sum(dim=1)
    if bool(((sums - 1.0).abs() > 1e-3).any()):
        raise ValueError(
            "probs rows must sum to 1 (softmax outputs); got row sums in "
            f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}]"
        )
    y, c = as_labels(labels, p.shape[0], p.device)
    return p / sums[:, None], y, c


def one_hot(y: torch.Tensor, c: int) -> torch.Tensor:
    """N x C float64 indicator matrix."""
    out = torch.zeros(y.shape[0], c, dtype=torch.float64, device=y.device)
    out[torch.arange(y.shape[0], device=y.device), y] = 1.0
    return out
