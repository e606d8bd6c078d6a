"""Two-group effect measures for an ordinal outcome such as mRS, without a model.

* :func:`generalized_odds_ratio` -- Agresti's generalized odds ratio (ties excluded) and
  the Wilcoxon-Mann-Whitney odds (ties split), from the counts of all between-group pairs.
* :func:`utility_mean_difference` -- the utility-weighted mRS analysed as a continuous
  score: difference in means with a seeded bootstrap interval.

Direction, as everywhere in :mod:`hypo.stats`: a measure > 1 (a difference < 0 on the
utility scale) means the ``comparison`` group tends to the *higher* (worse) mRS.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._util import rng_for
from .ordinal import Z95
from .outcomes import UTILITY_WEIGHTS_DEFUSE3, code_outcome

__all__ = ["generalized_odds_ratio", "utility_mean_difference", "utility_weighted_mrs"]

GENOR_CI_METHOD = (
    "delta method on the log scale, asymptotic variance of the pair proportions under two "
    "independent multinomial samples (Agresti 1980)"
)


def _values(v, name: str) -> np.ndarray:
    s = pd.Series(np.asarray(v, dtype=object) if not isinstance(v, pd.Series) else v)
    x = pd.to_numeric(s, errors="coerce")
    bad = s.notna() & x.isna()
    if bad.any():
        raise ValueError(
            f"group {name!r}: non-numeric values {s[bad].unique()[:5].tolist()}; expected "
            f"ordinal scores such as mRS 0-6"
        )
    x = x.dropna().to_numpy(float)
    if len(x) == 0:
        raise ValueError(f"group {name!r} has no non-missing values")
    return x


def _pair_placements(ref: np.ndarray, cmp_: np.ndarray):
    """For every comparison value the share of reference values below / above it, and for
    every reference value the share of comparison values above / below it."""
    r = np.sort(ref)
    c = np.sort(cmp_)
    below_c = np.searchsorted(r, cmp_, side="left") / len(r)  # P(ref < y_j)
    above_c = (len(r) - np.searchsorted(r, cmp_, side="right")) / len(r)  # P(ref > y_j)
    above_r = (len(c) - np.searchsorted(c, ref, side="right")) / len(c)  # P(cmp > x_i)
    below_r = np.searchsorted(c, ref, side="left") / len(c)  # P(cmp < x_i)
    return below_c, above_c, above_r, below_r


def generalized_odds_ratio(
    reference,
    comparison,
    names: tuple[str, str] = ("reference", "comparison"),
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Generalized odds ratio and Wilcoxon-Mann-Whitney odds of two groups.

    Over all ``n_ref x n_cmp`` pairs (one patient of each group), let ``P>`` be the share
    in which the comparison patient has the higher score, ``P<`` the lower, ``P=`` tied.

    * Generalized odds ratio (Agresti 1980, ties excluded): ``P> / P<``.
    * WMW odds (O'Brien & Castelloe 2006; Churilov et al. 2014, ties split):
      ``(P> + P=/2) / (P< + P=/2)``, the odds that a random comparison patient scores
      higher than a random reference patient.

    Both are 1 when the groups do not differ; > 1 means the comparison group tends to
    higher scores (a worse mRS). Intervals: :data:`GENOR_CI_METHOD` (U-statistic
    placements: for each patient, the share of the other group above and below). ``p``
    tests measure = 1 with the same standard error.

    Parameters
    ----------
    reference, comparison : array-like
        Ordinal scores (e.g. mRS 0-6) of each group; missing values are dropped.
    names : (str, str)
        Group labels for the ``reference`` / ``comparison`` columns and error messages.
    alpha : float
        1 - coverage of the intervals.

    Returns
    -------
    DataFrame
        One row per measure: ``measure, ties, OR, OR_low, OR_high, p, ci_method,
        reference, comparison, n_reference, n_comparison, pairs_higher, pairs_lower,
        pairs_tied, direction, note``. A measure that is infinite or zero (no pair on one
        side) has NaN interval ends and says so in ``note``.
    """
    x = _values(reference, names[0])
    y = _values(comparison, names[1])
    nx, ny = len(x), len(y)
    below_c, above_c, above_r, below_r = _pair_placements(x, y)
    pc = float(below_c.mean())  # P(comparison > reference)
    pd_ = float(above_c.mean())  # P(comparison < reference)
    pt = 1.0 - pc - pd_
    # Covariance of (P>, P<): placements of each group, population moments (multinomial).
    cov = (
        np.cov(np.vstack([below_c, above_c]), ddof=0) / ny
        + np.cov(np.vstack([above_r, below_r]), ddof=0) / nx
    )
    z = stats.norm.ppf(1 - alpha / 2) if alpha != 0.05 else Z95
    rows = []
    for measure, ties in (("generalized_odds_ratio", "excluded"), ("wmw_odds", "split")):
        if measure == "generalized_odds_ratio":
            num, den = pc, pd_
            grad = np.array([1 / pc, -1 / pd_]) if pc > 0 and pd_ > 0 else None
        else:
            num, den = pc + pt / 2, pd_ + pt / 2
            w = num  # = (1 + P> - P<) / 2
            grad = np.array([0.5, -0.5]) / (w * (1 - w)) if 0 < w < 1 else None
        note = ""
        if grad is None:
            est = np.inf if den == 0 else 0.0
            lo = hi = p = np.nan
            note = (
                f"no pair with the {names[1]} patient {'lower' if den == 0 else 'higher'}: "
                "the measure is not finite and has no interval"
            )
        else:
            est = num / den
            se = float(np.sqrt(grad @ cov @ grad))
            lo, hi = np.exp(np.log(est) - z * se), np.exp(np.log(est) + z * se)
            p = float(2 * stats.norm.sf(abs(np.log(est)) / se)) if se > 0 else np.nan
        rows.append(
            {
                "measure": measure,
                "ties": ties,
                "OR": est,
                "OR_low": lo,
                "OR_high": hi,
                "p": p,
                "ci_method": GENOR_CI_METHOD,
                "reference": names[0],
                "comparison": names[1],
                "n_reference": nx,
                "n_comparison": ny,
                "pairs_higher": int(round(pc * nx * ny)),
                "pairs_lower": int(round(pd_ * nx * ny)),
                "pairs_tied": int(round(pt * nx * ny)),
                "direction": f"> 1: {names[1]} tends to higher scores (worse mRS) than {names[0]}",
                "note": note,
            }
        )
    return pd.DataFrame(rows)


def utility_weighted_mrs(mrs) -> pd.Series:
    """Utility-weighted mRS: each grade mapped to its utility (1 = best, 0 = dead).

    Weights (Chaisinanunkul N, Adeoye O, Lewis RJ, et al. Adopting a patient-centered
    approach to primary outcome analysis of acute stroke trials using a utility-weighted
    modified Rankin Scale. Stroke 2015;46:2238-43; the weights DAWN and DEFUSE 3 used):
    mRS 0: 1.0, 1: 0.91, 2: 0.76, 3: 0.65, 4: 0.33, 5: 0, 6: 0 (the table
    :data:`hypo.stats.outcomes.UTILITY_WEIGHTS_DEFUSE3`). Missing mRS stays missing; any
    other value is an error naming it.
    """
    return code_outcome(mrs, "utility")


def utility_mean_difference(
    reference,
    comparison,
    names: tuple[str, str] = ("reference", "comparison"),
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Difference in mean utility-weighted mRS (comparison - reference), bootstrap CI.

    The mRS grades are mapped to utilities (:func:`utility_weighted_mrs`) and analysed as a
    continuous score, as Chaisinanunkul et al. (2015) propose, not as another ordinal
    coding. The interval is a percentile bootstrap that resamples each group separately
    (``scipy.stats.bootstrap``), drawing from ``rng_for(seed, "utility_mean_difference")``:
    same seed, same interval.

    Returns
    -------
    DataFrame
        One row: ``measure, mean_reference, mean_comparison, difference, difference_low,
        difference_high, p, ci_method, weights, reference, comparison, n_reference,
        n_comparison, direction``; ``p`` is Welch's t-test. A negative difference means the
        comparison group has lower utility (a worse outcome).
    """
    u_ref = utility_weighted_mrs(pd.Series(np.asarray(reference, dtype=float), name=names[0]))
    u_cmp = utility_weighted_mrs(pd.Series(np.asarray(comparison, dtype=float), name=names[1]))
    a = u_ref.dropna().to_numpy(float)
    b = u_cmp.dropna().to_numpy(float)
    for arr, nm in ((a, names[0]), (b, names[1])):
        if len(arr) < 2:
            raise ValueError(f"group {nm!r}: needs at least 2 patients with a known mRS")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    diff = float(b.mean() - a.mean())
    if np.ptp(np.concatenate([a, b])) == 0:
        lo = hi = diff  # every patient has the same utility: nothing to resample
    else:
        boot = stats.bootstrap(
            (a, b),
            lambda r, c, axis=-1: np.mean(c, axis=axis) - np.mean(r, axis=axis),
            n_resamples=n_resamples,
            method="percentile",
            confidence_level=1 - alpha,
            rng=rng_for(seed, "utility_mean_difference"),
            vectorized=True,
        )
        lo, hi = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    p = float(stats.ttest_ind(b, a, equal_var=False).pvalue) if np.ptp(np.r_[a, b]) else np.nan
    return pd.DataFrame(
        [
            {
                "measure": "utility_weighted_mrs_mean_difference",
                "mean_reference": float(a.mean()),
                "mean_comparison": float(b.mean()),
                "difference": diff,
                "difference_low": lo,
                "difference_high": hi,
                "p": p,
                "ci_method": f"percentile bootstrap, {n_resamples} resamples per group, "
                f"seed {seed}",
                "weights": "Chaisinanunkul et al., Stroke 2015 (mRS 0-6: "
                + ", ".join(f"{w:g}" for w in UTILITY_WEIGHTS_DEFUSE3)
                + ")",
                "reference": names[0],
                "comparison": names[1],
                "n_reference": len(a),
                "n_comparison": len(b),
                "direction": f"< 0: {names[1]} has lower utility (worse outcome) than {names[0]}",
            }
        ]
    )
