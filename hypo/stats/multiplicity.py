"""Multiplicity control within a pre-registered family of hypotheses."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

__all__ = ["bh_qvalues", "add_qvalues"]


def bh_qvalues(p, failed_as_one: bool = True) -> np.ndarray:
    """Benjamini-Hochberg q-values (``multipletests(method="fdr_bh")``).

    Parameters
    ----------
    p : array-like
        p-values of one family; NaN marks a test that could not be run.
    failed_as_one : bool
        Count failed tests (NaN) in the family size as if p = 1, so that a failure can
        never make the others look stronger. Their q stays NaN.

    Returns
    -------
    ndarray
        q-values, same order as ``p``.
    """
    p = np.asarray(p, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p must be one-dimensional, got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1]; got {p[(p < 0) | (p > 1)][:5].tolist()}")
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return q
    if (~ok).any():
        warnings.warn(
            f"{int((~ok).sum())} of {len(p)} tests in the family have no p-value; "
            + (
                "they count as p = 1 in the BH family size"
                if failed_as_one
                else "they are left out"
            ),
            stacklevel=2,
        )
    if failed_as_one:
        q_all = multipletests(np.where(ok, p, 1.0), method="fdr_bh")[1]
        q[ok] = q_all[ok]
    else:
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def add_qvalues(
    table: pd.DataFrame, p_col: str = "p", family_col: str | None = None, q_col: str = "q"
) -> pd.DataFrame:
    """Return ``table`` with BH q-values computed within each family (or over all rows)."""
    if p_col not in table.columns:
        raise ValueError(f"column {p_col!r} is not in the table; columns: {list(table.columns)}")
    out = table.copy()
    if family_col is None:
        out[q_col] = bh_qvalues(out[p_col].to_numpy())
        return out
    if family_col not in table.columns:
        raise ValueError(f"family column {family_col!r} is not in the table")
    out[q_col] = np.nan
    for _, idx in out.groupby(family_col, sort=False).groups.items():
        out.loc[idx, q_col] = bh_qvalues(out.loc[idx, p_col].to_numpy())
    return out
