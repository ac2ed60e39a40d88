"""Error of a mean over a crossed seeds x test-examples design, split into its two parts.

Why: a seed redraws the label subset, the initialisation and the batch order, but never the test
set, and every seed and both arms of a comparison score the *same* test examples. The accuracy
(or paired accuracy difference) of ``n`` seeds on ``m`` examples is the grand mean of an
``n x m`` matrix ``x[s, j]`` whose rows and columns are both samples from populations (label
subsets, test examples). Treating the examples as fixed is the "language-as-fixed-effect
fallacy" (Clark 1973, J. Verbal Learning and Verbal Behavior 12:335-359): a seed-only interval
then ignores test-set sampling, which on 144 examples is often the larger term.

Model (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2):386-411, sec. 2):
``x[s, j] = mu + a_s + b_j + e_sj`` with exchangeable rows and columns, so that the error of the
grand mean is ``(mean_s(a_s + e_s.)) + mean_j(b_j)``: a *seed part* and a *test-set part*,
uncorrelated. In the balanced two-way ANOVA with one observation per cell (Searle, Casella &
McCulloch 1992, "Variance Components", sec. 4.5), ``E[MS_seed] = s2_e + m s2_a`` and
``E[MS_example - MS_residual] = n s2_b``, so

- seed part: variance ``MS_seed / (n m)``, with ``n - 1`` degrees of freedom (the seed means'
  own spread, which already holds the seed x example noise);
- test-set part: variance ``max(MS_example - MS_residual, 0) / (n m)`` (truncated at zero,
  Searle et al. sec. 4.5), with the ``m - 1`` df of the example means. (Satterthwaite's df for
  ``MS_example - MS_residual`` collapses towards 0 when that part is small, and a t with 0.01 df
  gives an absurd interval for a negligible part; with m >= 100 examples either choice is
  nearly normal where the part matters.)

Two readings follow. p-values (which feed Holm or BH) combine the two parts by Behrens-Fisher
(:attr:`CrossedMean.parts`, :mod:`atlbench.analysis._inference`): conservative in the tail.
Intervals use :attr:`CrossedMean.satterthwaite`, one Student t with Satterthwaite's df on the
variance with every component truncated at zero: closer to nominal at 95% (the Behrens-Fisher
interval covers 97% at 3 seeds), but too liberal in the far tail for a correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class CrossedMean:
    """Grand mean of ``(..., n_seeds, n_examples)`` arrays and the two parts of its error.

    Every field has the array's leading shape (0-d for one matrix). ``var`` is the estimated
    variance of the mean (``se_seed**2 + se_example**2``), 0 when nothing varies.
    """

    mean: np.ndarray
    se_seed: np.ndarray
    df_seed: np.ndarray
    se_example: np.ndarray
    df_example: np.ndarray
    ms_seed: np.ndarray
    ms_example: np.ndarray
    ms_residual: np.ndarray
    n_seeds: int
    n_examples: int

    @property
    def var(self) -> np.ndarray:
        var: np.ndarray = self.se_seed**2 + self.se_example**2
        return var

    @property
    def satterthwaite(self) -> tuple[np.ndarray, np.ndarray]:
        """``(se, df)`` of one Student t for the mean: the intervals of gains and accuracies.

        Variance ``(max(MS_s - MS_e, 0) + max(MS_j - MS_e, 0) + MS_e) / (n m)`` (each component
        truncated at zero), Satterthwaite df of ``MS_s + MS_j - MS_e``. Covers 94-96% for a
        nominal 95% with 3 or 5 seeds, but its small p-values are too frequent with 3 seeds
        (tests/unit/test_coverage.py), so p-values use :attr:`parts` (Behrens-Fisher).
        """
        n, m = self.n_seeds, self.n_examples
        ms_s, ms_j, ms_e = self.ms_seed, self.ms_example, self.ms_residual
        total = np.maximum(ms_s - ms_e, 0.0) + np.maximum(ms_j - ms_e, 0.0) + ms_e
        denom = ms_s**2 / (n - 1) + ms_j**2 / (m - 1) + ms_e**2 / ((n - 1) * (m - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(denom > 0, total**2 / denom, np.nan)
        return np.sqrt(total / (n * m)), df

    @property
    def parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(s1, d1, s2, d2)`` for :func:`atlbench.analysis._inference.p_value` and friends.

        Seeds whose means agree far more closely than the seed x example noise alone allows
        (``MS_seed / MS_residual`` below the 1% quantile of its null law, F(n - 1, (n - 1)(m - 1));
        always when the seed-level gains are identical) carry no information about the seed
        part, and ``MS_seed / (n m)`` would drop that noise, which the interval keeps (its seed
        component is truncated at zero, leaving ``MS_residual``): p fell to 1e-182 beside an
        interval [+3.9, +6.1]. There the seed part is the interval's, ``MS_residual / (n m)``,
        still with ``n - 1`` df: the same variance, so the two agree. The 1% bound leaves the
        test's calibration as it was everywhere else (tests/unit/test_coverage.py).
        """
        n, m = self.n_seeds, self.n_examples
        floor = float(stats.f.ppf(0.01, n - 1, (n - 1) * (m - 1)))
        implausible = self.ms_seed < floor * self.ms_residual
        s1 = np.where(implausible, np.sqrt(self.ms_residual / (n * m)), self.se_seed)
        d1 = self.df_seed
        return s1, d1, self.se_example, self.df_example


def crossed_mean(x: np.ndarray) -> CrossedMean:
    """ANOVA decomposition of the error of a seeds x examples mean (batched over leading axes).

    ``x[..., s, j]`` is one seed's score on one test example: 0/1 correctness for an arm's
    accuracy, or the paired difference ``correct_transfer - correct_baseline`` in {-1, 0, 1}
    for a gain (same example order in both arms and every seed). Needs n_seeds >= 2 and
    n_examples >= 2.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim < 2:
        raise ValueError(f"need a (..., n_seeds, n_examples) array, got shape {x.shape}")
    n, m = x.shape[-2], x.shape[-1]
    if n < 2 or m < 2:
        raise ValueError(f"need >= 2 seeds and >= 2 examples, got {n} x {m}")
    grand = x.mean(axis=(-2, -1))
    rows = x.mean(axis=-1)
    cols = x.mean(axis=-2)
    ms_s = m * ((rows - grand[..., None]) ** 2).sum(axis=-1) / (n - 1)
    ms_j = n * ((cols - grand[..., None]) ** 2).sum(axis=-1) / (m - 1)
    resid = x - rows[..., :, None] - cols[..., None, :] + grand[..., None, None]
    ms_e = (resid**2).sum(axis=(-2, -1)) / ((n - 1) * (m - 1))
    # Round-off on constant rows/columns leaves ~1e-33 instead of 0.
    tiny = 1e-15 * np.maximum(1.0, np.abs(grand))
    ms_s = np.where(ms_s <= tiny, 0.0, ms_s)
    example = np.maximum(ms_j - ms_e, 0.0)
    example = np.where(example <= tiny, 0.0, example)
    return CrossedMean(
        mean=grand,
        se_seed=np.sqrt(ms_s / (n * m)),
        df_seed=np.full(grand.shape, float(n - 1)),
        se_example=np.sqrt(example / (n * m)),
        df_example=np.full(grand.shape, float(m - 1)),
        ms_seed=ms_s,
        ms_example=ms_j,
        ms_residual=ms_e,
        n_seeds=n,
        n_examples=m,
    )
