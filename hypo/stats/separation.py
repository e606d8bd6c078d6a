"""Detect (quasi-)complete separation in cumulative-logit and binary logistic data.

The maximum-likelihood estimate of a proportional-odds model ``logit P(Y <= j) =
theta_j - x'beta`` fails to exist exactly when the log-likelihood keeps rising along some
direction ``(d_theta, d_beta)`` with ``d_beta != 0``: every patient's linear predictor moves
away from the cut-points that bound their observed level (``d_theta_c - x_i'd_beta >= 0``
above, ``d_theta_{c-1} - x_i'd_beta <= 0`` below) with ordered ``d_theta``, and at least one
inequality is strict. Those patients' fitted probabilities of their observed level then go
to 1 along the direction: the optimiser stops at some large, arbitrary coefficient with an
enormous standard error, and may still report convergence.

The check is a small linear programme (Konis 2007 for the binary case, extended to ordered
cut-points), solved with scipy's HiGHS. It looks at the data's geometry only, so it has no
threshold on the size of an effect: a strong but finite effect is never flagged, and a
separated covariate is flagged whatever its scale. A binary outcome is the case ``J = 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

__all__ = ["Separation", "find_separation", "separation_in_fit", "side_probabilities"]

#: A cut at which every patient's fitted probability of lying on their own side of it exceeds
#: this is separated: the fit reproduces a perfect split there, and the coefficient is set
#: by a few patients at the split (or runs off to infinity). Non-separated fits, even with
#: effects of 8 per SD, keep their smallest own-side probability per cut below ~0.2.
SEPARATED_SIDE_PROB = 0.99
#: An own-side probability above this makes the exact check (the linear programme) run: an
#: optimiser chasing an infinite estimate stops far beyond it (1 - 1e-9 and closer), while
#: fits of real effects of 1-8 per SD rarely reach it.
EXTREME_SIDE_PROB = 1 - 1e-6

#: LP optimum (sum of slacks, each in [0, 1], standardised covariates) above which the
#: data are separated. Solver noise is ~1e-9; a real separating direction gives >= 1e-3.
LP_TOL = 1e-6


@dataclass(frozen=True)
class Separation:
    """A direction along which the likelihood never stops rising.

    Attributes
    ----------
    columns : list of str
        Design columns with a non-zero component in the separating direction.
    direction : dict
        ``column -> component`` (per SD of the column; sign: + = towards a higher level).
    n_separated : int
        Patients strictly on one side of a separating cut along the direction: their
        fitted probability of lying on that side tends to 1 (one solution of the
        programme; the count is not unique).
    cuts : list of str
        Cut-points (``"2|3"``) at which those patients are separated from the rest.
    kind : {"direction", "split"}
        ``"direction"``: the likelihood rises for ever along a direction (exact check; the
        maximum-likelihood estimate is infinite). ``"split"``: a fit put every patient
        firmly on their own side of one cut (smallest such probability in
        ``min_side_probability``); the coefficient is then set by the few patients nearest
        the split (a jitter, a rounding) and means nothing.
    """

    columns: list
    direction: dict
    n_separated: int
    cuts: list
    kind: str = "direction"
    min_side_probability: float = float("nan")

    def describe(self, what: str = "the outcome") -> str:
        cols = ", ".join(f"{c} ({'+' if v > 0 else '-'})" for c, v in self.direction.items())
        if self.kind == "split":
            return (
                f"quasi-complete separation of {what} at cut {', '.join(self.cuts)} by {cols}: "
                f"every patient's fitted probability of lying on their own side of that cut is "
                f">= {self.min_side_probability:.4f}, so the coefficient is set by the few "
                f"patients nearest the split, not by the data's overlap"
            )
        return (
            f"quasi-complete separation of {what} by {cols} at cut(s) {', '.join(self.cuts)}: "
            f"{self.n_separated} patient(s) have a fitted probability of lying on their side "
            f"of that cut that tends to 1, so the maximum-likelihood estimate is infinite"
        )


def find_separation(codes: np.ndarray, X: np.ndarray | pd.DataFrame, levels=None):
    """Return a :class:`Separation` if the data are (quasi-)completely separated, else None.

    Where the direction found uses several columns but some column separates on its own,
    only those columns are named (the linear programme's direction is not unique).
    """
    sep = _find_separation(codes, X, levels)
    if sep is None or len(sep.columns) < 2 or not isinstance(X, pd.DataFrame):
        return sep
    alone = [c for c in sep.columns if _find_separation(codes, X[[c]], levels) is not None]
    if not alone:
        return sep
    return _find_separation(codes, X[alone], levels) or sep


def _find_separation(codes: np.ndarray, X: np.ndarray | pd.DataFrame, levels=None):
    """The linear programme.

    Parameters
    ----------
    codes : array of int
        Outcome codes ``0..J-1`` (every level observed), one per row of ``X``.
    X : array or DataFrame
        Design matrix without intercept (n x k).
    levels : list, optional
        Level labels for naming the cuts (default ``0..J-1``).
    """
    codes = np.asarray(codes, dtype=int)
    names = list(X.columns) if isinstance(X, pd.DataFrame) else [f"x{i}" for i in range(X.shape[1])]
    Xa = np.asarray(X, dtype=float)
    n, k = Xa.shape
    J = int(codes.max()) + 1
    levels = list(range(J)) if levels is None else list(levels)
    if k == 0 or n == 0:
        return None
    sd = Xa.std(axis=0)
    sd[sd == 0] = 1.0
    Xs = (Xa - Xa.mean(axis=0)) / sd
    # Variables: d_theta (J-1), d_beta (k), slacks s_up (n), s_lo (n); maximise sum(s).
    m = J - 1
    nv = m + k + 2 * n
    rows, rhs = [], []
    idx = np.arange(n)
    up = codes < J - 1
    lo = codes > 0
    # s_up_i - (d_theta_c - x_i'd_beta) <= 0  (s_up_i = 0 where there is no upper cut)
    A_up = np.zeros((n, nv))
    A_up[idx[up], codes[up]] = -1.0
    A_up[:, m : m + k] = Xs
    A_up[idx, m + k + idx] = 1.0
    # s_lo_i + (d_theta_{c-1} - x_i'd_beta) <= 0
    A_lo = np.zeros((n, nv))
    A_lo[idx[lo], codes[lo] - 1] = 1.0
    A_lo[:, m : m + k] = -Xs
    A_lo[idx, m + k + n + idx] = 1.0
    # Patients in the lowest (highest) level have no lower (upper) cut: no constraint.
    rows += [A_up[up], A_lo[lo]]
    rhs += [np.zeros(int(up.sum())), np.zeros(int(lo.sum()))]
    # Ordered cut-point directions: d_theta_j - d_theta_{j+1} <= 0.
    if m > 1:
        A_ord = np.zeros((m - 1, nv))
        A_ord[np.arange(m - 1), np.arange(m - 1)] = 1.0
        A_ord[np.arange(m - 1), np.arange(1, m)] = -1.0
        rows.append(A_ord)
        rhs.append(np.zeros(m - 1))
    bounds = [(-1.0, 1.0)] * (m + k)
    bounds += [(0.0, 1.0 if u else 0.0) for u in up] + [(0.0, 1.0 if lw else 0.0) for lw in lo]
    c = np.zeros(nv)
    c[m + k :] = -1.0
    res = optimize.linprog(
        c, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=bounds, method="highs"
    )
    if res.status != 0 or -res.fun <= LP_TOL:
        return None
    x = res.x
    d_beta = x[m : m + k]
    s_up = x[m + k : m + k + n]
    s_lo = x[m + k + n :]
    strict = (s_up > LP_TOL) | (s_lo > LP_TOL)
    scale = np.max(np.abs(d_beta)) or 1.0
    direction = {nm: float(v / scale) for nm, v in zip(names, d_beta) if abs(v) > 1e-7 * scale}
    if not direction:
        return None
    # A cut separates where patients at or below it and patients above it are pushed apart.
    cut_hits = set()
    for i in np.flatnonzero(strict):
        if s_up[i] > LP_TOL:
            cut_hits.add(int(codes[i]))
        if s_lo[i] > LP_TOL:
            cut_hits.add(int(codes[i]) - 1)
    cuts = [f"{levels[j]}|{levels[j + 1]}" for j in sorted(cut_hits)]
    return Separation(
        columns=list(direction),
        direction=direction,
        n_separated=int(strict.sum()),
        cuts=cuts,
    )


def side_probabilities(theta, eta, codes, link: str = "logit") -> np.ndarray:
    """Fitted probability that each patient lies on their own side of each cut (n x J-1),
    for ``logit P(Y <= j) = theta_j - eta``."""
    z = np.asarray(theta, float)[None, :] - np.asarray(eta, float)[:, None]
    below = special.expit(z) if link == "logit" else stats.norm.cdf(z)  # P(Y <= level_j)
    codes = np.asarray(codes, dtype=int)
    return np.where(codes[:, None] > np.arange(z.shape[1])[None, :], 1.0 - below, below)


def separation_in_fit(codes, X, theta, eta, levels=None, link: str = "logit"):
    """Separation seen in a fitted cumulative-link model, or None.

    Two signs, neither a threshold on the size of an effect: a direction in which the
    likelihood keeps rising (:func:`find_separation`, run once some patient's fitted
    own-side probability exceeds ``EXTREME_SIDE_PROB``, as it does when an optimiser chases
    an infinite estimate, or a cut is split as below), or a cut that every patient is
    fitted to lie firmly on their own side of (all own-side probabilities above
    ``SEPARATED_SIDE_PROB``; ``kind="split"``), where the coefficient is set by the few
    patients nearest the split -- a 0/1 covariate with a little jitter, say.

    Parameters
    ----------
    codes : array of int
        Outcome codes ``0..J-1``.
    X : DataFrame or array
        Design without intercept.
    theta, eta : arrays
        Fitted natural-scale cut-points (J-1) and linear predictors ``x'beta`` (n).
    """
    codes = np.asarray(codes, dtype=int)
    levels = list(range(len(theta) + 1)) if levels is None else list(levels)
    with np.errstate(all="ignore"):
        side = side_probabilities(theta, eta, codes, link)
    firm = np.flatnonzero(side.min(axis=0) > SEPARATED_SIDE_PROB)
    if not firm.size and not np.any(side > EXTREME_SIDE_PROB):
        return None
    exact = find_separation(codes, X, levels)
    if exact is not None:
        return exact
    if not firm.size:
        return None
    j = int(firm[0])
    # The fitted linear predictor splits the patients at this cut, so the binary split
    # there is separated; the linear programme names the columns that do it.
    sep = find_separation((codes > j).astype(int), X)
    names = list(X.columns) if isinstance(X, pd.DataFrame) else [f"x{i}" for i in range(X.shape[1])]
    direction = sep.direction if sep is not None else {c: 1.0 for c in names}
    return Separation(
        columns=list(direction),
        direction=direction,
        n_separated=len(codes),
        cuts=[f"{levels[j]}|{levels[j + 1]}"],
        kind="split",
        min_side_probability=float(side[:, j].min()),
    )
