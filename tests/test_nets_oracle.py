"""The mRS oracle: the generator's true model and a PO fit on the true covariates."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hypo.nets.oracle import OracleError, mrs_oracle

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
    raw = mrs_oracle(cohort, pid[:80], pid[80:], slices)
    t = raw.set_index(["oracle", "metric"])
    # u = 0.5 and a threshold at P = 0.5: the Bayes rule reproduces every outcome.
    assert t.loc[("true model", "accuracy (lesion slices)"), "estimate"] == 1.0
    assert t.loc[("true model", "accuracy (lesion slices)"), "n_slices"] == 3 * 80
    # Deterministic outcomes separate the PO fit: said in a note, the ceiling still there.
    assert set(raw["oracle"]) == {"true model"}
    assert raw.attrs["note"].startswith("fitted PO not available")
    cohort, pid = _cohort(noise=True, seed=1)
    t = mrs_oracle(cohort, pid[:80], pid[80:], pd.Series(1, index=pid[80:]))
    t = t.set_index(["oracle", "metric"])["estimate"]
    assert 0.6 < t[("true model", "accuracy (lesion slices)")] < 1.0
    assert 0.55 < t[("fitted PO", "accuracy (lesion slices)")] < 1.0


def test_patients_without_lesion_slices_do_not_count():
    cohort, pid = _cohort()
    slices = pd.Series(0, index=pid[80:])
    slices.iloc[:10] = 2
    t = mrs_oracle(cohort, pid[:80], pid[80:], slices)
    acc = t[t["metric"] == "accuracy (lesion slices)"].iloc[0]
    assert acc["n_patients"] == 10 and acc["n_slices"] == 20


def test_a_cohort_without_truth_is_refused():
    cohort, pid = _cohort()
    cohort.truth = lambda: None
    with pytest.raises(OracleError, match="synthetic"):
        mrs_oracle(cohort, pid[:80], pid[80:], pd.Series(1, index=pid[80:]))
