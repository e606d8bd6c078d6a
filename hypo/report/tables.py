"""Report tables: Table 1 (baseline characteristics), patient flow, formatted results.

Every function takes the tidy tables the stages before the report write (the patient
table of :mod:`hypo.features.join`, the results table of
:func:`hypo.stats.registry.test_hypotheses`) and returns a DataFrame of strings ready for
``report.md`` / ``report.html``. Patients are named by ``participant_id`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hypo.cohort.layout import mrs_poor

MRS_GOOD = "mRS 0-2"
MRS_POOR = "mRS 3-6"
MRS_MISSING = "mRS missing"
OVERALL = "Overall"

FLOW_COLUMNS = ("step", "n_remaining", "n_excluded", "reason")
RESULT_COLUMNS = (
    "hypothesis",
    "model",
    "feature",
    "term",
    "estimate",
    "se",
    "OR",
    "OR_low",
    "OR_high",
    "p",
    "q",
    "n",
    "direction",
)

_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}
_FEMALE = {"f", "female", "w", "woman"}
_MALE = {"m", "male", "man"}


# --------------------------------------------------------------------------- helpers
def _require(df: pd.DataFrame, columns, what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; the table has {list(df.columns)}")


def fmt_number(x, decimals: int = 1) -> str:
    """Round to ``decimals`` and drop a trailing ``.0`` (72.0 -> '72', 4.5 -> '4.5')."""
    if x is None or not np.isfinite(x):
        return "n/a"
    s = f"{x:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def fmt_p(p, decimals: int = 3) -> str:
    """A p- or q-value as reported: '< 0.001' below the printed precision, else rounded."""
    if p is None or not np.isfinite(p):
        return "n/a"
    floor = 10.0**-decimals
    if p < floor:
        return f"< {floor:.{decimals}f}"
    return f"{p:.{decimals}f}"


def mrs_group(mrs: pd.Series | Sequence) -> pd.Series:
    """Dichotomise the 3-month mRS into functional independence (0-2) vs dependence/death.

    Parameters
    ----------
    mrs : Series
        mRS 0-6; NaN for a missing outcome.

    Returns
    -------
    Series of str
        ``"mRS 0-2"``, ``"mRS 3-6"`` or ``"mRS missing"``.
    """
    s = pd.Series(mrs)
    poor = mrs_poor(s)
    out = pd.Series(MRS_MISSING, index=s.index, dtype=object)
    out[poor == 0] = MRS_GOOD
    out[poor == 1] = MRS_POOR
    return out


def _as_code(values: pd.Series, column: str, ones, zeros, expected: str) -> pd.Series:
    """Values in ``ones`` -> 1.0, in ``zeros`` -> 0.0 (case-blind), missing -> NaN;
    anything else is an error naming the column and ``expected``."""
    out = pd.Series(np.nan, index=values.index, dtype=float)
    for i, v in values.items():
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            continue
        key = str(v).strip().lower()
        if key in ones:
            out[i] = 1.0
        elif key in zeros:
            out[i] = 0.0
        else:
            raise ValueError(f"column {column!r}: value {v!r} is not {expected}")
    return out


def _as_binary(values: pd.Series, column: str) -> pd.Series:
    """0/1/bool/yes/no -> float 0/1 with NaN for missing; anything else is an error."""
    return _as_code(values, column, _TRUE, _FALSE,
                    "a yes/no code (expected 0/1, True/False or yes/no)")  # fmt: skip


def _as_female(values: pd.Series, column: str) -> pd.Series:
    return _as_code(values, column, _FEMALE, _MALE, "a sex code (expected F/M)")


# --------------------------------------------------------------------------- Table 1
@dataclass(frozen=True)
class Table1Row:
    """One characteristic of Table 1.

    ``kind`` is ``"continuous"`` (median [IQR], Mann-Whitney / Kruskal-Wallis),
    ``"binary"`` (n (%), chi-square), ``"female"`` (sex coded F/M -> female n (%)) or
    ``"categorical"`` (one line per level, n (%), chi-square over all levels).
    """

    column: str
    label: str
    kind: str
    decimals: int = 1


#: The usual clinical Table 1 of a stroke cohort, in the order a paper prints it.
DEFAULT_TABLE1_ROWS = (
    Table1Row("age", "Age, years, median [IQR]", "continuous"),
    Table1Row("sex", "Female, n (%)", "female"),
    Table1Row("nihss_baseline", "NIHSS at admission, median [IQR]", "continuous"),
    Table1Row("mrs_before", "Pre-stroke mRS, median [IQR]", "continuous"),
    Table1Row("ivt", "Intravenous thrombolysis, n (%)", "binary"),
    Table1Row("iat", "Intra-arterial thrombectomy, n (%)", "binary"),
    Table1Row("lesion_volume_ml", "Lesion volume, mL, median [IQR]", "continuous"),
    Table1Row("lesion_side", "Lesion side, n (%)", "categorical"),
)


def _median_iqr(x: pd.Series, decimals: int) -> str:
    x = x.dropna().astype(float)
    if x.empty:
        return "n/a"
    # Linear-interpolation quartiles (numpy/pandas default; R's type 7).
    q1, med, q3 = np.percentile(x.to_numpy(), [25, 50, 75])
    return f"{fmt_number(med, decimals)} [{fmt_number(q1, decimals)}, {fmt_number(q3, decimals)}]"


def _n_pct(k: int, n: int) -> str:
    if n == 0:
        return "n/a"
    return f"{k} ({100.0 * k / n:.1f}%)"


def _continuous_p(groups: list[pd.Series]) -> tuple[float, str]:
    groups = [g.dropna().astype(float) for g in groups]
    groups = [g for g in groups if len(g)]
    if len(groups) < 2:
        return np.nan, ""
    if np.ptp(np.concatenate([g.to_numpy() for g in groups])) == 0:
        return np.nan, ""  # every value tied: no test
    if len(groups) == 2:
        res = stats.mannwhitneyu(groups[0], groups[1], alternative="two-sided")
        return float(res.pvalue), "Mann-Whitney U"
    res = stats.kruskal(*groups)
    return float(res.pvalue), "Kruskal-Wallis"


def _categorical_p(codes: pd.Series, groups: pd.Series) -> tuple[float, str]:
    ok = codes.notna() & groups.notna()
    tab = pd.crosstab(codes[ok], groups[ok])
    if tab.shape[0] < 2 or tab.shape[1] < 2:
        return np.nan, ""
    # Yates' continuity correction on 2x2 tables (scipy's default), as clinical tables do.
    res = stats.chi2_contingency(tab.to_numpy())
    return float(res.pvalue), "chi-square"


def _table1_lines(row, raw, groups, tested, masks, headers, cols) -> list[dict]:
    """The Table 1 line(s) of one characteristic (a categorical one has a line per level)."""
    is_tested = groups.isin(tested)
    n_missing = int(raw.isna().sum())
    if row.kind == "continuous":
        x = pd.to_numeric(raw, errors="coerce")
        if (x.isna() & raw.notna()).any():
            bad = raw[x.isna() & raw.notna()].iloc[0]
            raise ValueError(f"column {row.column!r}: value {bad!r} is not a number")
        line = {headers[c]: _median_iqr(x[masks[c]], row.decimals) for c in cols}
        p, test = _continuous_p([x[groups == g] for g in tested])
        return [{"characteristic": row.label, **line, "p": p, "test": test, "n_missing": n_missing}]
    if row.kind in ("binary", "female"):
        x = _as_female(raw, row.column) if row.kind == "female" else _as_binary(raw, row.column)
        line = {
            headers[c]: _n_pct(int((x[masks[c]] == 1).sum()), int(x[masks[c]].notna().sum()))
            for c in cols
        }
        p, test = _categorical_p(x[is_tested], groups[is_tested])
        return [{"characteristic": row.label, **line, "p": p, "test": test, "n_missing": n_missing}]
    if row.kind == "categorical":
        x = raw.astype(object).where(raw.notna(), None)
        p, test = _categorical_p(x[is_tested], groups[is_tested])
        blank = {headers[c]: "" for c in cols}
        out = [{"characteristic": row.label, **blank, "p": p, "test": test, "n_missing": n_missing}]
        for level in sorted(x.dropna().unique(), key=str):
            line = {
                headers[c]: _n_pct(
                    int((x[masks[c]] == level).sum()), int(x[masks[c]].notna().sum())
                )
                for c in cols
            }
            # Level rows carry their characteristic's name: HTML collapses indentation.
            out.append({"characteristic": f"{row.label.split(',')[0]}: {level}", **line})
        return out
    raise ValueError(
        f"Table 1 row {row.column!r}: unknown kind {row.kind!r}; expected "
        "continuous, binary, female or categorical"
    )


def table1(
    df: pd.DataFrame,
    by: str = "mrs_group",
    outcome: str = "mrs_3months",
    rows: Sequence[Table1Row] = DEFAULT_TABLE1_ROWS,
    population: str | None = None,
    overall: bool = True,
) -> pd.DataFrame:
    """Baseline characteristics by outcome group: the clinical Table 1.

    Parameters
    ----------
    df : DataFrame
        Patient table: one row per patient with ``participant_id`` and the columns named
        in ``rows``. Rows whose column is absent from ``df`` are left out of the table.
    by : str
        Grouping column. ``"mrs_group"`` is derived from ``outcome`` when ``df`` lacks it
        (mRS 0-2 vs 3-6, plus a "mRS missing" column when any outcome is missing).
    outcome : str
        3-month mRS column (0-6) used to build ``mrs_group``.
    rows : sequence of Table1Row
        Characteristics to report, in order.
    population : str, optional
        Boolean column (e.g. ``"analysis_population"``); only its true rows are tabulated.
    overall : bool
        Add an "Overall" column.

    Returns
    -------
    DataFrame
        Columns ``characteristic``, [``Overall``], one per group (header ``"<group>
        (n=k)"``), ``p``, ``test`` and ``n_missing`` (patients without the value). p-values
        compare the groups with a known outcome (the "mRS missing" group is shown but not
        tested): Mann-Whitney U for two groups (Kruskal-Wallis for more) on continuous
        rows, chi-square on counts. Medians and quartiles use linear interpolation.
    """
    _require(df, ["participant_id"], "table1")
    data = df
    if population is not None:
        _require(df, [population], "table1 population")
        data = df[df[population].astype(bool)]
    if by == "mrs_group" and by not in data.columns:
        _require(data, [outcome], "table1 (mrs_group is derived from the outcome)")
        groups = mrs_group(data[outcome])
        order = [MRS_GOOD, MRS_POOR, MRS_MISSING]
        tested = [MRS_GOOD, MRS_POOR]
    else:
        _require(data, [by], "table1")
        groups = data[by].astype(object).where(data[by].notna(), "missing")
        order = sorted(pd.unique(groups), key=str)
        tested = [g for g in order if g != "missing"]
    order = [g for g in order if (groups == g).any()]
    tested = [g for g in tested if g in order]
    if data.empty:
        raise ValueError("table1: no patients to tabulate (empty table or population)")

    cols = ([OVERALL] if overall else []) + order
    masks = {OVERALL: pd.Series(True, index=data.index)} | {g: groups == g for g in order}
    headers = {c: f"{c} (n={int(masks[c].sum())})" for c in cols}

    out = [{"characteristic": "n", **{headers[c]: str(int(masks[c].sum())) for c in cols}}]
    for row in rows:
        if row.column in data.columns:
            out += _table1_lines(row, data[row.column], groups, tested, masks, headers, cols)
    table = pd.DataFrame(out, columns=["characteristic", *headers.values(), "p", "test",
                                       "n_missing"])  # fmt: skip
    table["p"] = [fmt_p(p) if isinstance(p, float) and np.isfinite(p) else "" for p in table["p"]]
    table["test"] = table["test"].fillna("")
    table["n_missing"] = [
        "" if pd.isna(v) else str(int(v)) for v in table["n_missing"].astype(object)
    ]
    return table


# --------------------------------------------------------------------------- patient flow
def patient_flow_table(flow) -> pd.DataFrame:
    """Check and tidy a patient flow (who was excluded at which step, and why).

    Parameters
    ----------
    flow : DataFrame or sequence
        Columns (or tuples in this order) ``step, n_remaining, n_excluded, reason``. The
        first step is the starting cohort (``n_excluded`` 0 or NaN).

    Returns
    -------
    DataFrame
        The same columns with integer counts. Raises ``ValueError`` when a count is
        negative, when patients reappear, or when ``n_excluded`` does not equal the drop in
        ``n_remaining`` from the step before.
    """
    if isinstance(flow, pd.DataFrame):
        _require(flow, FLOW_COLUMNS, "patient flow")
        table = flow.loc[:, list(FLOW_COLUMNS)].copy()
    else:
        rows = []
        for i, r in enumerate(flow):
            r = tuple(r.values()) if isinstance(r, dict) else tuple(r)
            if len(r) != 4:
                raise ValueError(
                    f"patient flow step {i}: expected (step, n_remaining, n_excluded, "
                    f"reason), got {r!r}"
                )
            rows.append(r)
        table = pd.DataFrame(rows, columns=list(FLOW_COLUMNS))
    if table.empty:
        raise ValueError("patient flow: no steps")
    table["n_excluded"] = table["n_excluded"].fillna(0)
    for col in ("n_remaining", "n_excluded"):
        v = pd.to_numeric(table[col], errors="coerce")
        if v.isna().any() or (v < 0).any() or (v != np.round(v)).any():
            raise ValueError(f"patient flow: column {col!r} must hold counts >= 0; got {list(v)}")
        table[col] = v.astype(int)
    for i in range(1, len(table)):
        prev, cur = table.iloc[i - 1], table.iloc[i]
        if cur["n_remaining"] > prev["n_remaining"]:
            raise ValueError(
                f"patient flow step {cur['step']!r}: {cur['n_remaining']} patients remain "
                f"after {prev['n_remaining']} at the step before; patients cannot reappear"
            )
        drop = prev["n_remaining"] - cur["n_remaining"]
        if cur["n_excluded"] != drop:
            raise ValueError(
                f"patient flow step {cur['step']!r}: n_excluded = {cur['n_excluded']} but "
                f"n_remaining fell by {drop}"
            )
    table["step"] = table["step"].astype(str)
    table["reason"] = table["reason"].fillna("").astype(str)
    return table.reset_index(drop=True)


def patient_flow(
    df: pd.DataFrame, criteria: Sequence[tuple], start: str = "All participants"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply inclusion criteria in order and record who each one excluded.

    Parameters
    ----------
    df : DataFrame
        Patient table with ``participant_id``.
    criteria : sequence of (step, keep, reason)
        ``keep`` is a boolean column name of ``df`` or a boolean array/Series aligned with
        ``df`` (True = stays in). A patient is counted at the first step that excludes them.
    start : str
        Name of the starting step.

    Returns
    -------
    flow : DataFrame
        ``step, n_remaining, n_excluded, reason`` (see :func:`patient_flow_table`).
    excluded : DataFrame
        ``participant_id, step, reason``: one row per excluded patient.
    """
    _require(df, ["participant_id"], "patient_flow")
    if df["participant_id"].duplicated().any():
        dup = df["participant_id"][df["participant_id"].duplicated()].iloc[0]
        raise ValueError(f"patient_flow: participant_id {dup!r} appears more than once")
    remaining = pd.Series(True, index=df.index)
    rows = [(start, len(df), 0, "")]
    excluded = []
    for step, keep, reason in criteria:
        if isinstance(keep, str):
            _require(df, [keep], f"patient flow step {step!r}")
            keep = df[keep]
        keep = (
            pd.Series(np.asarray(keep), index=df.index) if not isinstance(keep, pd.Series) else keep
        )
        if len(keep) != len(df):
            raise ValueError(
                f"patient flow step {step!r}: criterion has {len(keep)} values for "
                f"{len(df)} patients"
            )
        keep = keep.reindex(df.index).fillna(False).astype(bool)
        out_now = remaining & ~keep
        for pid in df.loc[out_now, "participant_id"]:
            excluded.append({"participant_id": pid, "step": step, "reason": reason})
        remaining &= keep
        rows.append((step, int(remaining.sum()), int(out_now.sum()), reason))
    return (
        patient_flow_table(rows),
        pd.DataFrame(excluded, columns=["participant_id", "step", "reason"]),
    )


# --------------------------------------------------------------------------- results
#: Columns of the report's results table (``format_results(compact=True)``), in order.
COMPACT_RESULT_COLUMNS = ["hypothesis", "feature", "map source", "OR [95% CI]", "p", "q",
                          "analysis", "n", "significance", "true_value", "covered"]  # fmt: skip


def _significance(e, pv, qv, err, alpha: float) -> str:
    """Significance in words: q where there is one, else the unadjusted p."""
    if err or not np.isfinite(e):
        return f"not estimated: {err}" if err else "not estimated"
    if np.isfinite(qv):
        return f"significant (q < {alpha:g})" if qv < alpha else f"not significant (q >= {alpha:g})"
    if np.isfinite(pv):
        if pv < alpha:
            return f"significant (p < {alpha:g}, unadjusted)"
        return f"not significant (p >= {alpha:g}, unadjusted)"
    return "not tested"


def format_results(
    results: pd.DataFrame,
    alpha: float = 0.05,
    decimals: int = 2,
    p_decimals: int = 3,
    compact: bool = False,
) -> pd.DataFrame:
    """The results table as a paper prints it: OR [95% CI], p, q and significance in words.

    Parameters
    ----------
    results : DataFrame
        Output of :func:`hypo.stats.registry.test_hypotheses` (columns
        ``hypothesis, model, feature, term, estimate, se, OR, OR_low, OR_high, p, q, n,
        direction``; optional ``family``, ``analysis``, ``map_source``, ``true_value``,
        ``covered``, ``error``).
    alpha : float
        Significance level applied to ``q`` (Benjamini-Hochberg within a family), or to
        ``p`` where ``q`` is missing.
    decimals, p_decimals : int
        Rounding of odds ratios / estimates and of p/q-values.

    Returns
    -------
    DataFrame of str
        ``hypothesis, [family, analysis,] model, [map_source,] feature, term, n,
        estimate (SE), OR [95% CI], p, q, significance, direction`` (+ ``coding``,
        ``expected_direction``, ``true_value``, ``covered`` when present). Failed fits keep their row; ``significance`` then says
        "not estimated: <error>". No stars: significance is stated. With ``compact=True``
        only what a reader scans, in :data:`COMPACT_RESULT_COLUMNS` order (those present):
        hypothesis, feature, map source, OR [95% CI], p, q, analysis, n, significance
        (true_value, covered on a synthetic cohort) -- readable at 1280 px; the identifiers
        stay in ``results.csv``.
    """
    _require(results, RESULT_COLUMNS, "results table")
    out = pd.DataFrame(index=results.index)
    out["hypothesis"] = results["hypothesis"].astype(str)
    for opt in ("family", "analysis"):
        if opt in results.columns:
            out[opt] = results[opt].fillna("").astype(str)
    out["model"] = results["model"].fillna("").astype(str)
    if "map_source" in results.columns:
        out["map_source"] = results["map_source"].fillna("").astype(str)
    out["feature"] = results["feature"].fillna("").astype(str)
    out["term"] = results["term"].fillna("").astype(str)
    out["n"] = ["" if pd.isna(v) else str(int(v)) for v in results["n"]]
    est = pd.to_numeric(results["estimate"], errors="coerce")
    se = pd.to_numeric(results["se"], errors="coerce")
    out["estimate (SE)"] = [
        "n/a" if not np.isfinite(e) else f"{e:.{decimals + 1}f} ({se_:.{decimals + 1}f})"
        for e, se_ in zip(est, se)
    ]
    o, lo, hi = (pd.to_numeric(results[c], errors="coerce") for c in ("OR", "OR_low", "OR_high"))
    out["OR [95% CI]"] = [
        "n/a" if not np.isfinite(a) else f"{a:.{decimals}f} [{b:.{decimals}f}, {c:.{decimals}f}]"
        for a, b, c in zip(o, lo, hi)
    ]
    p = pd.to_numeric(results["p"], errors="coerce")
    q = pd.to_numeric(results["q"], errors="coerce")
    out["p"] = [fmt_p(v, p_decimals) for v in p]
    out["q"] = [fmt_p(v, p_decimals) for v in q]
    errors = (
        results["error"].fillna("").astype(str)
        if "error" in results.columns
        else pd.Series("", index=results.index)
    )
    sig = [_significance(e, pv, qv, err, alpha) for e, pv, qv, err in zip(est, p, q, errors)]
    out["significance"] = sig
    out["direction"] = results["direction"].fillna("").astype(str)
    for opt in ("coding", "expected_direction"):
        if opt in results.columns:
            out[opt] = results[opt].fillna("").astype(str)
    if "true_value" in results.columns:
        tv = pd.to_numeric(results["true_value"], errors="coerce")
        out["true_value"] = [fmt_number(v, decimals + 1) for v in tv]
    if "covered" in results.columns:
        out["covered"] = [
            "" if pd.isna(v) else ("yes" if bool(v) else "no") for v in results["covered"]
        ]
    out = out.reset_index(drop=True)
    if compact:
        out = out.rename(columns={"map_source": "map source"})
        # A failed fit's message (a formula, patient ids) is in results.csv; the table
        # names the error's kind, so a 1280 px page does not scroll.
        out["significance"] = [
            s
            if not s.startswith("not estimated: ")
            else f"not estimated ({s[15:].split(':', 1)[0].split()[0]}; see results.csv)"
            for s in out["significance"]
        ]
        # An interval or "< 0.001" never breaks across lines (no-break spaces).
        for c in ("OR [95% CI]", "p", "q"):
            out[c] = out[c].str.replace(" ", "\u00a0")
        if "true_value" in out:
            out["true_value"] = out["true_value"].replace("n/a", "")
        out = out[[c for c in COMPACT_RESULT_COLUMNS if c in out.columns]]
    return out
