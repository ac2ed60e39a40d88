"""How far a verdict sits from the lines that decide it, in units of a re-run's spread.

Three lines decide a verdict (:mod:`atlbench.analysis._gains`): the interval's edge at zero
(a directed verdict against "not significant"), the corrected p-value at alpha ("significant"
against "nominal") and, with an equivalence margin, the corrected equivalence p-value at alpha
("equivalent" against "not significant"). Each line is crossed at some value of the mean gain,
all else held (the standard errors, and the row's correction factor ``p_adj / p``): the
interval's half-width for the edge; for a p-value line, the gain at which the last look's
p-value equals ``alpha p / p_adj``, read off the same Behrens-Fisher error distribution the
p-value comes from (:func:`atlbench.analysis._inference.error_quantile`). The distance of a
verdict is how far its gain sits from the nearest line that can change it, in standard errors
of the interval.

Another machine rounds floats differently, and training grows that into per-seed differences,
so a re-run moves the mean gain. By how much was measured: the quickstart run twice from the
same seeds, once on this machine's own kernels and once on those of a CPU without AVX-512
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``), comparing the mean gains where a
comparison had the same seeds in both (``tests/benchmarks/rerun_spread.py``; README, "What
reproduces"). The change had an RMS of 1.33 standard errors of the interval (1.38 for frozen
recipes, 1.24 for trained ones, over 68 comparisons): nearly what an independent replication
gives (sqrt 2). Frozen recipes moved as much as trained ones because the sources themselves
were pre-trained on each machine (the offline zoo); a probe on downloaded weights would move
less, so the flag is conservative there. A verdict is flagged ``near_threshold`` when its
distance is below ``FLIP_Z`` re-run SDs: a re-run crosses the line about 5% of the time or more
(one-sided normal tail).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from atlbench.analysis._inference import error_quantile

RERUN_SD = 1.33
"""RMS change of a mean gain between two float histories, in standard errors of its interval
(measured: see the module docstring)."""
FLIP_Z = 1.645
"""A line nearer than this many re-run SDs is crossed by a re-run about 5% of the time or more."""


def _crossing(p_last: np.ndarray, p_adj: np.ndarray, alpha: float) -> np.ndarray:
    """The last look's p-value at which the corrected one reaches alpha; NaN if undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        target = p_last * alpha / p_adj
    ok = np.isfinite(target) & (p_adj > 0) & (target > 0)
    return np.where(ok, target, np.nan)


def line_gains(
    parts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ci_se: np.ndarray,
    ci_df: np.ndarray,
    p_last: np.ndarray,
    p_adj: np.ndarray,
    p_eq_last: np.ndarray,
    p_eq_adj: np.ndarray,
    margin: float | None,
    alpha: float = 0.05,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(edge, significance, equivalence)``: the absolute mean gain at which each row crosses
    each line (NaN where a line does not apply).

    ``parts`` are the Behrens-Fisher scales and df ``(s1, d1, s2, d2)`` of the p-values;
    ``p_last``/``p_eq_last`` the last look's ordinary p-values, ``p_adj``/``p_eq_adj`` the
    corrected (sequential) ones.
    """
    s1, d1, s2, d2 = (np.asarray(a, dtype=float) for a in parts)
    edge = stats.t.ppf(0.5 + level / 2.0, np.asarray(ci_df, float)) * np.asarray(ci_se, float)
    # a two-sided p-value 2 P(W > |g|) equals the target where |g| is W's target/2 quantile
    target = _crossing(np.asarray(p_last, float), np.asarray(p_adj, float), alpha) / 2.0
    sig = error_quantile(np.where(target < 0.5, target, np.nan), s1, d1, s2, d2)
    eq = np.full(np.shape(sig), np.nan)
    if margin is not None:  # TOST p = P(W > margin - |g|) inside the margin
        target_eq = _crossing(np.asarray(p_eq_last, float), np.asarray(p_eq_adj, float), alpha)
        below = error_quantile(np.where(target_eq < 0.5, target_eq, np.nan), s1, d1, s2, d2)
        eq = margin - below
    return np.asarray(edge, float), np.asarray(sig, float), np.asarray(eq, float)


def threshold_distance(
    gain: np.ndarray,
    ci_se: np.ndarray,
    lines: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Distance (standard errors, >= 0) from ``|gain|`` to the nearest line that can change the
    verdict; NaN where none applies.

    The interval's edge always; the significance line when the interval excludes zero
    (otherwise the verdict is not directed whatever the p); the equivalence line when it does
    not (a directed verdict stays directed).
    """
    g = np.abs(np.asarray(gain, dtype=float))
    edge, sig, eq = lines
    directed = g > edge
    candidates = np.stack(
        [np.abs(g - edge), np.where(directed, np.abs(g - sig), np.nan),
         np.where(directed, np.nan, np.abs(g - eq))]
    )  # fmt: skip
    finite = np.isfinite(candidates)
    nearest = np.min(np.where(finite, candidates, np.inf), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = np.where(finite.any(axis=0), nearest / np.asarray(ci_se, float), np.nan)
    return out


def near_threshold(distance: np.ndarray) -> np.ndarray:
    """Rows within ``FLIP_Z`` re-run SDs of a deciding line."""
    with np.errstate(invalid="ignore"):
        out: np.ndarray = np.isfinite(distance) & (distance < FLIP_Z * RERUN_SD)
    return out
