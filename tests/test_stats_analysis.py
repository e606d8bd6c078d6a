"""Outcome codings, multiplicity, bootstrap, discrimination, secondary and missing-data tools."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from hypo.stats import (
    add_qvalues,
    bh_qvalues,
    bootstrap_ci,
    bootstrap_proportional_odds,
    calibration_table,
    code_outcome,
    compare_outcome_groups,
    complete_case,
    cross_validated_predictions,
    cv_discrimination,
    fit_outcome,
    fit_proportional_odds,
    harrell_c,
    mice_proportional_odds,
    ordinal_c_index,
    partial_spearman,
    rubin_pool,
    stratified_folds,
)

DATA = Path(__file__).parent / "data" / "stats"


def simulated_cohort(n=120, effect=1.0, seed=0) -> pd.DataFrame:
    """mRS 0-6 from a latent logistic model: higher lesion volume -> worse."""
    rng = np.random.default_rng(seed)
    volume = rng.gamma(2.0, 15.0, n)
    age = rng.normal(70, 10, n)
    latent = effect * (volume - 30) / 15 + 0.03 * (age - 70) + rng.logistic(size=n)
    mrs = np.digitize(latent, [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    return pd.DataFrame({"mrs_3months": mrs, "lesion_volume_ml": volume, "age": age})


# ---------------------------------------------------------------- outcome codings


def test_code_outcome_codings():
    mrs = pd.Series([0, 1, 2, 3, 4, 5, 6, np.nan], name="mrs")
    assert list(code_outcome(mrs, "mrs").cat.categories) == list(range(7))
    merged = code_outcome(mrs, "mrs_5_6_merged")
    assert merged.iloc[6] == 5 and list(merged.cat.categories) == list(range(6))
    np.testing.assert_array_equal(
        code_outcome(mrs, "mrs_0_2_vs_3_6").iloc[:7], [0, 0, 0, 1, 1, 1, 1]
    )
    np.testing.assert_array_equal(
        code_outcome(mrs, "mrs_0_1_vs_2_6").iloc[:7], [0, 0, 1, 1, 1, 1, 1]
    )
    np.testing.assert_allclose(
        code_outcome(mrs, "utility").iloc[:7], [1.0, 0.91, 0.76, 0.65, 0.33, 0, 0]
    )
    assert code_outcome(mrs, "utility").isna().iloc[7]
    with pytest.raises(ValueError, match="0-6"):
        code_outcome(pd.Series([0, 7]), "mrs")
    with pytest.raises(ValueError, match="coding"):
        code_outcome(mrs, "mrs_0_3")


def test_fit_outcome_directions_agree_across_codings():
    df = simulated_cohort(n=300, effect=1.0)
    tables = {
        c: fit_outcome(df, "lesion_volume_ml + age", "mrs_3months", c)
        for c in ["mrs", "mrs_5_6_merged", "mrs_0_2_vs_3_6", "mrs_0_1_vs_2_6", "utility"]
    }
    for coding, t in tables.items():
        row = t.set_index("term").loc["lesion_volume_ml"]
        assert row["direction"].startswith("higher lesion_volume_ml -> worse outcome"), coding
        assert row["p"] < 1e-3
    assert tables["mrs"].set_index("term").loc["lesion_volume_ml", "OR"] > 1
    assert tables["utility"].set_index("term").loc["lesion_volume_ml", "estimate"] < 0
    assert np.isnan(tables["utility"]["OR"]).all()
    po = fit_proportional_odds(df.assign(y=df["mrs_3months"]), "y ~ lesion_volume_ml + age")
    np.testing.assert_allclose(tables["mrs"]["estimate"], po.coef["estimate"])


def test_fit_outcome_logistic_matches_statsmodels():
    import statsmodels.formula.api as smf

    df = simulated_cohort(n=200)
    t = fit_outcome(df, "lesion_volume_ml + age", "mrs_3months", "mrs_0_2_vs_3_6").set_index("term")
    ref = smf.logit("y ~ lesion_volume_ml + age", df.assign(y=(df.mrs_3months >= 3) * 1)).fit(
        disp=0
    )
    np.testing.assert_allclose(t["estimate"], ref.params[1:], rtol=1e-6)
    np.testing.assert_allclose(t["se"], ref.bse[1:], rtol=1e-5)


# ---------------------------------------------------------------- multiplicity


def test_bh_matches_statsmodels_and_counts_failures_as_one():
    p = np.random.default_rng(1).uniform(0, 0.2, 12)
    np.testing.assert_allclose(bh_qvalues(p), multipletests(p, method="fdr_bh")[1])
    with_nan = p.copy()
    with_nan[3] = np.nan
    with pytest.warns(UserWarning, match="no p-value"):
        q = bh_qvalues(with_nan)
    ref = multipletests(np.where(np.isnan(with_nan), 1.0, with_nan), method="fdr_bh")[1]
    assert np.isnan(q[3])
    np.testing.assert_allclose(np.delete(q, 3), np.delete(ref, 3))
    t = add_qvalues(pd.DataFrame({"p": p, "fam": ["a"] * 6 + ["b"] * 6}), family_col="fam")
    np.testing.assert_allclose(t["q"][:6], multipletests(p[:6], method="fdr_bh")[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_qvalues([0.5, 1.2])


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_counts_failures():
    w = pd.read_csv(DATA / "wine.csv")
    a = bootstrap_proportional_odds(w, "rating ~ temp + contact", n_resamples=15, seed=7)
    b = bootstrap_proportional_odds(w, "rating ~ temp + contact", n_resamples=15, seed=7)
    c = bootstrap_proportional_odds(w, "rating ~ temp + contact", n_resamples=15, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_low"], c["ci_low"])
    assert (a["ci_low"] < a["estimate"]).all() and (a["estimate"] < a["ci_high"]).all()
    assert (a["n_ok"] + a["n_failed"] == 15).all()

    def fragile(df):
        if df["temp"].eq("warm").mean() > 0.5:
            raise ValueError("did not converge (simulated)")
        return {"mean_rating": df["rating"].mean()}

    out = bootstrap_ci(w, fragile, n_resamples=40, seed=1)
    n_failed = int(out["n_failed"].iloc[0])
    assert 0 < n_failed < 40 and out["n_ok"].iloc[0] == 40 - n_failed
    assert out["failures"].iloc[0] == f"ValueError: did not converge (simulated) (x{n_failed})"


def test_bootstrap_resamples_patients_not_rows():
    df = pd.DataFrame({"patient": np.repeat(np.arange(10), 3), "v": np.repeat(np.arange(10.0), 3)})

    def rows_per_patient(d):
        return {"r": d.groupby("patient").size().min()}

    out = bootstrap_ci(df, rows_per_patient, n_resamples=10, seed=0, patient_col="patient")
    assert out.loc["r", "ci_low"] >= 3  # a patient's rows always travel together


# ---------------------------------------------------------------- discrimination


def test_c_indices_on_wine_match_reference():
    w = pd.read_csv(DATA / "wine.csv")
    r = fit_proportional_odds(w, "rating ~ temp + contact")
    lp = r.linear_predictor()
    assert harrell_c(lp, w["rating"]) == pytest.approx(0.7738, abs=1e-4)
    assert ordinal_c_index(lp, w["rating"]) == pytest.approx(0.8204, abs=1e-4)


def test_harrell_c_matches_pair_count_with_ties():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, 40).astype(float)
    y = rng.integers(0, 3, 40)
    num = den = 0.0
    for i, j in itertools.permutations(range(40), 2):
        if y[i] < y[j]:
            den += 1
            num += (x[i] < x[j]) + 0.5 * (x[i] == x[j])
    assert harrell_c(x, y) == pytest.approx(num / den)
    assert harrell_c(-x, y) == pytest.approx(1 - num / den)


def test_stratified_folds_keep_every_level_in_training():
    y = np.array([0] * 20 + [1] * 10 + [2] * 2 + [3] * 3)
    folds = stratified_folds(y, n_splits=5, seed=0)
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(y)))
    for train, _ in folds:
        assert set(y[train]) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="fewer than 2"):
        stratified_folds(np.append(y, 9), n_splits=5)


def test_cross_validation_is_deterministic_and_out_of_fold():
    df = simulated_cohort(n=150)
    df["mrs_3months"] = code_outcome(df["mrs_3months"], "mrs_5_6_merged")
    a = cv_discrimination(df, "mrs_3months ~ lesion_volume_ml + age", n_splits=4, seed=3)
    b = cv_discrimination(df, "mrs_3months ~ lesion_volume_ml + age", n_splits=4, seed=3)
    pd.testing.assert_frame_equal(a, b)
    a = a.set_index("metric")
    assert 0.6 < a.loc["harrell_c", "cross_validated"] <= a.loc["harrell_c", "in_sample"] + 0.02
    cv = cross_validated_predictions(df, "mrs_3months ~ lesion_volume_ml + age", 4, 3)
    assert cv["fold"].between(0, 3).all() and cv["linear_predictor"].notna().all()
    # out-of-fold: a patient's prediction comes from a model that did not see them
    full = fit_proportional_odds(df, "mrs_3months ~ lesion_volume_ml + age").linear_predictor()
    assert not np.allclose(cv["linear_predictor"], full)


def test_calibration_table_of_a_correct_model_is_close():
    df = simulated_cohort(n=400, seed=5)
    r = fit_proportional_odds(df, "mrs_3months ~ lesion_volume_ml + age")
    cal = calibration_table(r.codes, r.predict_proba(), n_bins=5)
    assert set(cal["cut"]) == set(range(len(r.outcome_levels) - 1))
    assert (cal.groupby("cut")["n"].sum() == 400).all()
    assert cal["predicted"].between(0, 1).all() and cal["observed"].between(0, 1).all()
    assert np.corrcoef(cal["predicted"], cal["observed"])[0, 1] > 0.9
    assert (cal["predicted"] - cal["observed"]).abs().max() < 0.2
    # anti-ordered predictions (each patient gets the mirror patient's) are badly calibrated
    P = r.predict_proba().to_numpy()
    order = np.argsort(r.linear_predictor())
    bad = np.empty_like(P)
    bad[order] = P[order[::-1]]
    cal0 = calibration_table(r.codes, bad, n_bins=5)
    assert (cal0["predicted"] - cal0["observed"]).abs().max() > 0.3


# ---------------------------------------------------------------- secondary


def test_partial_spearman_equals_partial_correlation_of_ranks():
    df = simulated_cohort(n=80)
    out = partial_spearman(df, "lesion_volume_ml", "mrs_3months", "age").iloc[0]
    r = df[["lesion_volume_ml", "mrs_3months", "age"]].rank()
    Z = np.column_stack([np.ones(80), r["age"]])
    res = [
        r[c] - Z @ np.linalg.lstsq(Z, r[c], rcond=None)[0]
        for c in ("lesion_volume_ml", "mrs_3months")
    ]
    assert out["r"] == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-10)
    assert out["n"] == 80 and out["ci_low"] < out["r"] < out["ci_high"]


def test_partial_spearman_refuses_too_few_patients_and_collinear_covariates():
    import warnings

    df = simulated_cohort(n=80)
    df["age_copy"] = 2 * df["age"] + 1
    df["other"] = np.random.default_rng(1).normal(size=len(df))
    with pytest.raises(ValueError, match="5 patients with every value, fewer than the 6"):
        partial_spearman(df.head(5), "lesion_volume_ml", "mrs_3months", ["age", "other"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refusal is the message, not a library warning
        with pytest.raises(ValueError, match="collinear"):
            partial_spearman(df, "lesion_volume_ml", "mrs_3months", ["age", "age_copy"])


def test_compare_outcome_groups_matches_scipy_and_bh():
    df = simulated_cohort(n=90)
    df["noise"] = np.random.default_rng(0).normal(size=90)
    out = compare_outcome_groups(df, ["lesion_volume_ml", "age", "noise"]).set_index("feature")
    good = df["mrs_3months"] <= 2
    for f in out.index:
        p = stats.mannwhitneyu(df.loc[good, f], df.loc[~good, f]).pvalue
        assert out.loc[f, "p"] == pytest.approx(p, rel=1e-6)
    np.testing.assert_allclose(out["q"], multipletests(out["p"], method="fdr_bh")[1])
    assert out.loc["lesion_volume_ml", "median_poor"] > out.loc["lesion_volume_ml", "median_good"]


# ---------------------------------------------------------------- missing data


def test_complete_case_reports_per_column():
    df = pd.DataFrame({"a": [1, np.nan, 3, np.nan], "b": [np.nan, np.nan, 1, 2], "c": [1, 2, 3, 4]})
    kept, report = complete_case(df, ["a", "b", "c"])
    assert len(kept) == 1
    assert report.set_index("column")["n_missing"].to_dict() == {"a": 2, "b": 2, "c": 0, "any": 3}


def test_rubin_pool_by_hand():
    est = pd.DataFrame({"x": [1.0, 1.2, 0.8]})
    var = pd.DataFrame({"x": [0.04, 0.05, 0.03]})
    out = rubin_pool(est, var).loc["x"]
    b = np.var([1.0, 1.2, 0.8], ddof=1)
    t = 0.04 + (1 + 1 / 3) * b
    assert out["estimate"] == pytest.approx(1.0)
    assert out["se"] == pytest.approx(np.sqrt(t))
    lam = (1 + 1 / 3) * b / t
    assert out["df"] == pytest.approx(2 / lam**2)


def test_mice_is_seeded_and_equals_the_fit_without_missing_values():
    df = simulated_cohort(n=120, seed=2)
    full = fit_proportional_odds(df, "mrs_3months ~ lesion_volume_ml + age")
    pooled = mice_proportional_odds(df, "mrs_3months ~ lesion_volume_ml + age", m=3, seed=0)
    np.testing.assert_allclose(pooled["estimate"], full.coef["estimate"], atol=1e-8)
    np.testing.assert_allclose(pooled["se"], full.coef["se"], rtol=1e-6)
    holes = df.copy()
    holes.loc[np.random.default_rng(1).random(120) < 0.25, "age"] = np.nan
    a = mice_proportional_odds(holes, "mrs_3months ~ lesion_volume_ml + age", m=4, seed=5)
    b = mice_proportional_odds(holes, "mrs_3months ~ lesion_volume_ml + age", m=4, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert (a["n_imputed"] == int(holes["age"].isna().sum())).all()
    assert a.loc["lesion_volume_ml", "OR"] > 1
    with pytest.raises(ValueError, match="numeric"):
        mice_proportional_odds(holes.assign(side="left"), "mrs_3months ~ age + side", m=2)
