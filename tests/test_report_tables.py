"""Table 1, patient flow and results formatting of hypo.report.tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hypo.report.tables import (
    MRS_GOOD,
    MRS_MISSING,
    MRS_POOR,
    fmt_number,
    fmt_p,
    format_results,
    mrs_group,
    patient_flow,
    patient_flow_table,
    table1,
)


def _patients() -> pd.DataFrame:
    # 4 good outcomes, 4 poor, 1 missing; numbers chosen so medians/quartiles are easy.
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(9)],
            "age": [50, 60, 70, 80, 55, 65, 75, 85, 90],
            "sex": ["F", "M", "F", "M", "F", "F", "F", "M", None],
            "nihss_baseline": [2, 4, 6, 8, 10, 12, 14, 16, 3],
            "mrs_before": [0, 0, 1, 0, 1, 2, 0, 3, 0],
            "ivt": [1, 0, 0, 1, 1, 1, 0, 1, 0],
            "iat": ["yes", "no", "no", "no", "yes", "no", "no", "no", "no"],
            "lesion_volume_ml": [1.0, 2.0, 3.0, np.nan, 10.0, 20.0, 30.0, 40.0, 5.0],
            "lesion_side": [
                "left",
                "right",
                "left",
                "left",
                "right",
                "right",
                "bilateral",
                "left",
                "left",
            ],  # fmt: skip
            "mrs_3months": [0, 1, 2, 2, 3, 4, 5, 6, np.nan],
        }
    )


def test_mrs_group_dichotomy_and_validation():
    g = mrs_group(pd.Series([0, 2, 3, 6, np.nan]))
    assert list(g) == [MRS_GOOD, MRS_GOOD, MRS_POOR, MRS_POOR, MRS_MISSING]
    with pytest.raises(ValueError, match="0-6"):
        mrs_group(pd.Series([0, 7]))


def test_table1_matches_hand_computed_numbers():
    df = _patients()
    t = table1(df).set_index("characteristic")
    good, poor, miss, allc = (
        f"{MRS_GOOD} (n=4)",
        f"{MRS_POOR} (n=4)",
        f"{MRS_MISSING} (n=1)",
        "Overall (n=9)",
    )
    assert list(t.columns[:4]) == [allc, good, poor, miss]
    assert t.loc["n", good] == "4" and t.loc["n", poor] == "4" and t.loc["n", miss] == "1"
    # Age, good: 50 60 70 80 -> median 65, linear quartiles 57.5 and 72.5.
    assert t.loc["Age, years, median [IQR]", good] == "65 [57.5, 72.5]"
    a = np.array([55, 65, 75, 85], float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    assert t.loc["Age, years, median [IQR]", poor] == f"{med:g} [{q1:g}, {q3:g}]"
    # Female: good 2 of 4, poor 3 of 4, overall 5 of 8 known.
    assert t.loc["Female, n (%)", good] == "2 (50.0%)"
    assert t.loc["Female, n (%)", poor] == "3 (75.0%)"
    assert t.loc["Female, n (%)", allc] == "5 (62.5%)"
    assert t.loc["Female, n (%)", "n_missing"] == "1"
    # IAT coded yes/no: good 1 of 4.
    assert t.loc["Intra-arterial thrombectomy, n (%)", good] == "1 (25.0%)"
    # Lesion volume, good: 1, 2, 3 (one missing) -> median 2 [1.5, 2.5].
    assert t.loc["Lesion volume, mL, median [IQR]", good] == "2 [1.5, 2.5]"
    assert t.loc["Lesion volume, mL, median [IQR]", "n_missing"] == "1"
    # Categorical rows: one line per level under the header.
    assert t.loc["Lesion side: left", good] == "3 (75.0%)"
    # p-values: Mann-Whitney on the two known-outcome groups (missing group excluded).
    p = stats.mannwhitneyu([2, 4, 6, 8], [10, 12, 14, 16], alternative="two-sided").pvalue
    assert t.loc["NIHSS at admission, median [IQR]", "p"] == fmt_p(p)
    assert t.loc["NIHSS at admission, median [IQR]", "test"] == "Mann-Whitney U"
    assert t.loc["Female, n (%)", "test"] == "chi-square"


def test_table1_population_and_errors():
    df = _patients()
    df["analysis_population"] = [True] * 6 + [False] * 3
    t = table1(df, population="analysis_population")
    assert t.iloc[0, 1] == "6"  # overall n
    assert not any(MRS_MISSING in c for c in t.columns)
    with pytest.raises(ValueError, match="mrs_3months"):
        table1(df.drop(columns="mrs_3months"))
    bad = df.copy()
    bad["ivt"] = bad["ivt"].astype(object)
    bad.loc[0, "ivt"] = "maybe"
    with pytest.raises(ValueError, match="'ivt'.*'maybe'"):
        table1(bad)


def test_patient_flow_counts_and_who_was_excluded():
    df = pd.DataFrame(
        {
            "participant_id": ["a", "b", "c", "d", "e"],
            "group": ["stroke", "stroke", "TIA", "stroke", "stroke"],
            "has_lesion": [True, False, True, True, True],
            "mrs_3months": [1, 2, 0, np.nan, 5],
        }
    )
    flow, excluded = patient_flow(
        df,
        [
            ("stroke patients", df["group"] == "stroke", "TIA / other diagnosis"),
            ("visible lesion", "has_lesion", "no lesion on DWI"),
            ("known outcome", df["mrs_3months"].notna(), "mRS at 3 months missing"),
        ],
    )
    assert list(flow["n_remaining"]) == [5, 4, 3, 2]
    assert list(flow["n_excluded"]) == [0, 1, 1, 1]
    assert list(excluded["participant_id"]) == ["c", "b", "d"]
    assert list(excluded["reason"])[2] == "mRS at 3 months missing"


def test_patient_flow_table_rejects_inconsistent_counts():
    ok = patient_flow_table([("all", 10, 0, ""), ("stroke", 8, 2, "TIA")])
    assert ok["n_excluded"].dtype.kind == "i"
    with pytest.raises(ValueError, match="fell by 2"):
        patient_flow_table([("all", 10, 0, ""), ("stroke", 8, 3, "TIA")])
    with pytest.raises(ValueError, match="reappear"):
        patient_flow_table([("all", 10, 0, ""), ("stroke", 12, 0, "")])
    with pytest.raises(ValueError, match="reason"):
        patient_flow_table(pd.DataFrame({"step": ["a"], "n_remaining": [1], "n_excluded": [0]}))


def _results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "hypothesis": ["H1", "H2", "H3"],
            "model": ["mrs"] * 3,
            "feature": ["asym", "mass", "edge"],
            "term": ["asym", "mass", "edge"],
            "estimate": [np.log(1.5), np.log(0.9), np.nan],
            "se": [0.1, 0.2, np.nan],
            "OR": [1.5, 0.9, np.nan],
            "OR_low": [1.2345, 0.6, np.nan],
            "OR_high": [1.8, 1.35, np.nan],
            "p": [0.0004, 0.6, np.nan],
            "q": [0.0012, 0.6, np.nan],
            "n": [100, 100, 0],
            "direction": ["OR > 1: higher (worse) mRS per 1 SD of feature"] * 3,
            "error": ["", "", "separation in the data"],
        }
    )


def test_format_results_states_significance_and_keeps_failed_fits():
    f = format_results(_results())
    assert len(f) == 3
    assert f.loc[0, "OR [95% CI]"] == "1.50 [1.23, 1.80]"
    assert f.loc[0, "p"] == "< 0.001" and f.loc[0, "q"] == "0.001"
    assert f.loc[0, "significance"] == "significant (q < 0.05)"
    assert f.loc[1, "significance"].startswith("not significant")
    assert f.loc[2, "OR [95% CI]"] == "n/a"
    assert "separation" in f.loc[2, "significance"]
    assert not f.apply(lambda c: c.astype(str).str.contains(r"\*")).any().any()
    with pytest.raises(ValueError, match="OR_low"):
        format_results(_results().drop(columns="OR_low"))


def test_number_formatting():
    assert fmt_number(72.0) == "72" and fmt_number(4.5) == "4.5" and fmt_number(np.nan) == "n/a"
    assert fmt_p(0.0499) == "0.050" and fmt_p(1e-5) == "< 0.001"


def test_compact_results_lead_with_what_a_reader_scans():
    r = _results().assign(map_source=["cam", "control_uniform", "cam"])
    f = format_results(r, compact=True)
    assert list(f.columns[:6]) == ["hypothesis", "feature", "map source", "OR [95% CI]", "p", "q"]
    assert "model" not in f.columns and "term" not in f.columns and "direction" not in f.columns
    assert f.loc[0, "OR [95% CI]"] == "1.50\u00a0[1.23,\u00a01.80]"  # never broken across lines
    assert f.loc[0, "p"] == "<\u00a00.001"
    assert "separation" in f.loc[2, "significance"]
