"""The mRS oracle: the generator's true model and a PO fit on the true covariates."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hypo.study.oracle import OracleError, mrs_oracle

THETA = [0.8, 1.7, 2.6, 3.5, 4.6, 5.6]


def _cohort(n=160, seed=0, noise=True):
    """Patients whose mRS is drawn from the cumulative-logit model of the generator."""
    rng = np.random.default_rng(seed)
    pid = [f"sub-{i:03d}" for i in range(n)]
    age = rng.integers(50, 90, n)
    swelling = rng.normal(size=n)
    vol = np.exp(rng.normal(2, 1, n))
    lp = 0.35 * (age - 70) / 10 + 0.25 * np.log(vol + 1) + 2.0 * swelling + 1.5
    cum = 1 / (1 + np.exp(-(np.asarray(THETA)[None, :] - lp[:, None])))
    u = rng.random(n) if noise else np.full(n, 0.5)
    mrs = (u[:, None] > cum).sum(axis=1)
    part = pd.DataFrame({
        "age": age, "sex": rng.choice(["F", "M"], n), "group": "stroke",
        "mrs_before": rng.integers(0, 2, n), "nihss_baseline": rng.integers(0, 20, n),
        "ivt": rng.integers(0, 2, n), "iat": 0, "mrs_3months": mrs.astype(float),
    }, index=pd.Index(pid, name="participant_id"))  # fmt: skip
    truth = pd.DataFrame({
        "lesion_volume_ml": vol, "swelling": swelling,
        "side": rng.choice(["left", "right"], n), "territory": rng.choice(["MCA", "PCA"], n),
        "outcome_linear_predictor": lp,
    }, index=pd.Index(pid, name="participant_id"))  # fmt: skip
    gen = {"outcome_model": {"coefficients": {"theta": THETA}}}
    return SimpleNamespace(
        cohort_id="fake", participants=part, truth=lambda: truth, generator=lambda: gen
    ), pid


def test_true_model_is_perfect_without_chance_and_beats_a_coin_with_it():
    cohort, pid = _cohort(noise=False)
    slices = pd.Series(3, index=pid[80:])
    res = mrs_oracle(cohort, pid[:80], pid[80:], slices)
    raw = res.table
    t = raw[raw["rule"].isin(["P > 0.5", "threshold-free"])].set_index(["oracle", "metric"])
    # u = 0.5 and a threshold at P = 0.5: the Bayes rule reproduces every outcome.
    assert t.loc[("true model", "accuracy (lesion slices)"), "estimate"] == 1.0
    assert t.loc[("true model", "accuracy (lesion slices)"), "n_slices"] == 3 * 80
    assert t.loc[("true model", "AUC mRS 3-6 vs 0-2"), "estimate"] == 1.0
    # Deterministic outcomes separate the PO fit on every covariate of the outcome model:
    # said in a note, the ceiling still there. The image PO (a subset of the covariates)
    # is not separated and is fitted (the fit-based check finds no separation there).
    assert set(raw["oracle"]) == {"true model", "image PO"}
    assert res.note.startswith("fitted PO not available")
    cohort, pid = _cohort(noise=True, seed=1)
    res = mrs_oracle(cohort, pid[:80], pid[80:], pd.Series(1, index=pid[80:]))
    raw = res.table
    t = raw.set_index(["oracle", "rule", "metric"])["estimate"]
    assert 0.6 < t[("true model", "P > 0.5", "accuracy (lesion slices)")] < 1.0
    assert 0.55 < t[("fitted PO", "P > 0.5", "accuracy (lesion slices)")] < 1.0
    # The image oracle sees volume, side, territory and swelling: it carries the swelling
    # signal (the dominant term here) but less than the fit with every covariate.
    auc = t.xs("AUC mRS 3-6 vs 0-2", level="metric")
    assert 0.6 < auc[("image PO", "threshold-free")] <= auc[("fitted PO", "threshold-free")] + 0.05
    assert "age_decades" not in res.image_formula
    assert "swelling" in res.image_formula


def test_balanced_rule_moves_the_cut_to_the_training_share():
    cohort, pid = _cohort(n=240, seed=2)
    res = mrs_oracle(cohort, pid[:160], pid[160:], pd.Series(1, index=pid[160:]))
    raw = res.table
    part = cohort.participants
    share = float((part.loc[pid[:160], "mrs_3months"] > 2).mean())
    assert res.balanced_at == pytest.approx(share)
    t = raw.set_index(["oracle", "rule", "metric"])["estimate"]
    # A cut below 0.5 calls more patients poor: mRS 3-6 sensitivity cannot fall.
    assert share < 0.5
    for o in ("true model", "fitted PO", "image PO"):
        assert t[(o, "balanced", "sensitivity mRS 3-6")] >= t[(o, "P > 0.5", "sensitivity mRS 3-6")]
        assert t[(o, "balanced", "sensitivity mRS 0-2")] <= t[(o, "P > 0.5", "sensitivity mRS 0-2")]


def test_patients_without_lesion_slices_do_not_count():
    cohort, pid = _cohort()
    slices = pd.Series(0, index=pid[80:])
    slices.iloc[:10] = 2
    t = mrs_oracle(cohort, pid[:80], pid[80:], slices).table
    acc = t[t["metric"] == "accuracy (lesion slices)"].iloc[0]
    assert acc["n_patients"] == 10 and acc["n_slices"] == 20


def test_a_cohort_without_truth_is_refused():
    cohort, pid = _cohort()
    cohort.truth = lambda: None
    with pytest.raises(OracleError, match="synthetic"):
        mrs_oracle(cohort, pid[:80], pid[80:], pd.Series(1, index=pid[80:]))


def test_best_cut_is_the_closest_any_threshold_comes_to_the_targets():
    from hypo.study.oracle import TARGETS, _best_cut

    # Perfectly separable: some cut meets both targets (sensitivity 1 and 1).
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    poor = p > 0.5
    w = np.ones(5)
    cut = _best_cut(p, poor, w)
    assert 0.3 < cut <= 0.7
    # Uninformative: whatever the cut, one class falls short of its target.
    rng = np.random.default_rng(0)
    p = rng.random(400)
    poor = rng.random(400) < 0.4
    cut = _best_cut(p, poor, np.ones(400))
    s_good = (p[~poor] < cut).mean()
    s_poor = (p[poor] >= cut).mean()
    assert min(s_good - TARGETS["mRS 0-2"], s_poor - TARGETS["mRS 3-6"]) < 0
    # It is the max-min point: no other cut does better on the smaller margin.
    margins = [
        min((p[~poor] < c).mean() - TARGETS["mRS 0-2"], (p[poor] >= c).mean() - TARGETS["mRS 3-6"])
        for c in np.r_[np.unique(p), np.inf]
    ]
    assert min(s_good - TARGETS["mRS 0-2"], s_poor - TARGETS["mRS 3-6"]) == pytest.approx(
        max(margins)
    )


def test_true_model_on_all_patients_needs_no_fit():
    cohort, pid = _cohort(n=200, seed=3)
    every = pd.Series(2, index=pid)
    res = mrs_oracle(cohort, pid[:100], pid[100:], every, every)
    raw = res.table
    allp = raw[raw["oracle"] == "true model, all patients"]
    acc = allp[(allp["rule"] == "P > 0.5") & (allp["metric"] == "accuracy (lesion slices)")]
    assert acc["n_patients"].item() == 200 and acc["n_slices"].item() == 400
    test = raw[(raw["oracle"] == "true model") & (raw["rule"] == "P > 0.5")]
    assert test["n_patients"].max() == 100
    # The PO oracles, cross-fitted: every patient predicted out of sample.
    cv = raw[raw["oracle"].str.endswith("all patients (5-fold cross-fitted)")]
    assert set(cv["oracle"].str.split(",").str[0]) == {"fitted PO", "image PO"}
    assert (cv.loc[cv["metric"] == "accuracy (lesion slices)", "n_patients"] == 200).all()
    auc = cv[cv["metric"] == "AUC mRS 3-6 vs 0-2"].set_index("oracle")["estimate"]
    assert auc.min() > 0.6  # swelling, visible to both, drives this outcome


def test_cross_fitting_is_seeded_and_out_of_sample():
    from hypo.study.oracle import cross_fitted_poor

    cohort, pid = _cohort(n=150, seed=4)
    df = cohort.participants.join(cohort.truth()).reset_index()
    df["mrs_3months"] = df["mrs_3months"].astype(int)
    df["log_volume"] = np.log(df["lesion_volume_ml"] + 1)
    a = cross_fitted_poor(df, ("log_volume", "swelling"))
    np.testing.assert_array_equal(a, cross_fitted_poor(df, ("log_volume", "swelling")))
    assert not np.allclose(a, cross_fitted_poor(df, ("log_volume", "swelling"), seed=1))
    assert ((a > 0) & (a < 1)).all()


def test_lesion_area_baseline_per_slice():
    cohort, pid = _cohort(n=120, seed=5)
    part = cohort.participants
    rng = np.random.default_rng(5)
    rows = []
    for p in pid:
        poor = part.loc[p, "mrs_3months"] > 2
        for _ in range(3):  # larger lesion slices in poor-outcome patients
            area = rng.lognormal(5.0 if poor else 3.5, 0.5)
            rows.append({"participant_id": p, "lesion_visible": True, "lesion_area_mm2": area,
                         "mrs_3months": part.loc[p, "mrs_3months"]})  # fmt: skip
        rows.append({"participant_id": p, "lesion_visible": False, "lesion_area_mm2": 0.0,
                     "mrs_3months": part.loc[p, "mrs_3months"]})  # fmt: skip
    table = pd.DataFrame(rows)
    res = mrs_oracle(cohort, pid[:80], pid[80:], pd.Series(3, index=pid[80:]), slice_table=table)
    raw = res.table
    base = raw[raw["oracle"] == "slice lesion area (logistic)"].set_index(["rule", "metric"])
    assert base.loc[("threshold-free", "AUC mRS 3-6 vs 0-2"), "estimate"] > 0.85
    # Per slice: the 40 test patients' 120 lesion slices, lesion-free slices left out.
    assert base.loc[("P > 0.5", "accuracy (lesion slices)"), "n_slices"] == 120
    with pytest.raises(OracleError, match="lesion_area_mm2"):
        mrs_oracle(cohort, pid[:80], pid[80:], pd.Series(3, index=pid[80:]),
                   slice_table=table.drop(columns="lesion_area_mm2"))  # fmt: skip
