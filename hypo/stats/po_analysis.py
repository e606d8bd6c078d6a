"""One call for a researcher's own table: the proportional-odds fit and its checks.

:func:`po_analysis` is what ``python -m hypo.stats fit TABLE.csv "mrs ~ x + age"`` prints
and what the README's worked example calls: the PO table (OR, 95 % CI, p), the Brant and
nominal tests of proportional odds and, for every term that fails them (p < 0.05), the
partial proportional-odds table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .ordinal import OrdinalResult, fit_proportional_odds
from .po_tests import brant_test, nominal_test, partial_po_table

__all__ = ["POAnalysis", "po_analysis"]


@dataclass
class POAnalysis:
    """A proportional-odds fit with its assumption checks (tables as DataFrames).

    Attributes
    ----------
    fit : OrdinalResult
    table : DataFrame
        One row per design column: ``term, OR, OR_low, OR_high, p`` (OR > 1 = higher,
        worse outcome), ``ci_method``.
    brant, nominal : DataFrame
        :func:`hypo.stats.brant_test` and :func:`hypo.stats.nominal_test`; empty with a
        note in ``check_notes`` when they cannot be computed (e.g. a 2-level outcome).
    partial_po : DataFrame
        :func:`hypo.stats.partial_po_table` (empty when every term passes).
    check_notes : list of str
    """

    fit: OrdinalResult
    table: pd.DataFrame
    brant: pd.DataFrame
    nominal: pd.DataFrame
    partial_po: pd.DataFrame
    check_notes: list

    def summary(self) -> str:
        fmt = {"float_format": lambda v: f"{v:.4g}", "index": False}
        f = self.fit
        lines = [
            f"Proportional-odds (cumulative logit) fit: {f.formula}",
            f"n = {f.n:g}; outcome levels (low to high): {f.outcome_levels}"
            + (f"; rows dropped for missing values: {f.dropped}" if f.dropped else ""),
            f"OR > 1 means a higher (worse) {f.outcome}; 95% CI: {f.ci_method}; p: Wald.",
            "",
            self.table.drop(columns="ci_method").to_string(**fmt),
        ]
        if f.fit_warnings:
            lines += ["", "Warnings:", *[f"  {w}" for w in f.fit_warnings]]
        lines += ["", "Proportional-odds checks (small p = evidence against proportional odds)"]
        if len(self.brant):
            lines += ["Brant test:", self.brant.to_string(**fmt)]
        if len(self.nominal):
            nom = self.nominal[["term", "chi2", "df", "p"]]
            lines += ["Nominal (likelihood-ratio) test:", nom.to_string(**fmt)]
            notes = self.nominal.get("note", pd.Series(dtype=str)).fillna("")
            lines += [f"  {t}: {n}" for t, n in zip(self.nominal["term"], notes) if n]
        lines += [f"  {n}" for n in self.check_notes]
        if len(self.partial_po):
            cols = ["term", "cut", "OR", "OR_low", "OR_high", "p", "lr_chi2", "lr_df", "lr_p",
                    "status", "reason"]  # fmt: skip
            lines += [
                "",
                "Partial proportional odds for the terms that fail (per-cut OR, LR test vs PO):",
                self.partial_po[cols].to_string(**fmt),
            ]
        elif len(self.brant) or len(self.nominal):
            lines += ["Every term passes (p >= 0.05): no partial proportional-odds fit needed."]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def po_analysis(
    data: pd.DataFrame,
    formula: str,
    levels: list | None = None,
    ci: str = "wald",
    alpha: float = 0.05,
) -> POAnalysis:
    """Fit ``formula`` by proportional odds and check the assumption, term by term.

    Parameters
    ----------
    data : DataFrame
        One row per patient.
    formula : str
        E.g. ``"mrs ~ asymmetry_ipsi_contra + age"``; the outcome must hold mRS 0-6 unless
        ``levels`` lists another scale's levels (lowest first).
    ci : {"wald", "profile"}
        Interval of the ORs (see :func:`hypo.stats.fit_proportional_odds`).
    alpha : float
        A term fails the PO check when its Brant or nominal p is below this.

    Raises
    ------
    ValueError
        Missing columns, bad outcome values, separation, non-convergence (each named).
    """
    fit = fit_proportional_odds(data, formula, levels=levels, ci=ci)
    table = fit.coef[["OR", "OR_low", "OR_high", "p"]].reset_index()
    table["ci_method"] = fit.ci_method
    notes = []
    empty = pd.DataFrame(columns=["term", "chi2", "df", "p"])
    brant, nominal, ppo = empty, empty, pd.DataFrame()
    if fit.n_levels < 3:
        notes.append("the outcome has 2 levels: proportional odds cannot be tested")
    else:
        try:
            brant = brant_test(fit)
        except (ValueError, np.linalg.LinAlgError) as e:
            notes.append(f"Brant test not available: {type(e).__name__}: {e}")
        nominal = nominal_test(fit)
        ppo = partial_po_table(fit, alpha=alpha)
    return POAnalysis(fit, table, brant, nominal, ppo, notes)
