"""hypo.stats.ordinal against R (MASS::polr, ordinal::clm) and its input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels

import hypo.stats.ordinal as ordinal_mod
from hypo.stats import (
    ConvergenceError,
    SeparationError,
    fit_proportional_odds,
    lr_test_terms,
)

DATA = Path(__file__).parent / "data" / "stats"
LOW_MED_HIGH = ["Low", "Medium", "High"]


def load_housing() -> pd.DataFrame:
    h = pd.read_csv(DATA / "housing.csv")
    h["Sat"] = pd.Categorical(h["Sat"], categories=LOW_MED_HIGH, ordered=True)
    h["Infl"] = pd.Categorical(h["Infl"], categories=LOW_MED_HIGH)
    h["Type"] = pd.Categorical(h["Type"], categories=["Tower", "Apartment", "Atrium", "Terrace"])
    h["Cont"] = pd.Categorical(h["Cont"], categories=["Low", "High"])
    return h


def load_wine() -> pd.DataFrame:
    return pd.read_csv(DATA / "wine.csv")


def load_ucla() -> pd.DataFrame:
    path = Path(statsmodels.__file__).parent / "miscmodels/tests/results/ologit_ucla.csv"
    u = pd.read_csv(path)
    u["apply"] = pd.Categorical(
        u["apply"], categories=["unlikely", "somewhat likely", "very likely"], ordered=True
    )
    return u


def test_fixtures_match_their_documentation():
    h = load_housing()
    assert len(h) == 72 and h["Freq"].sum() == 1681
    w = load_wine()
    assert len(w) == 72 and w["judge"].nunique() == 9 and w["bottle"].nunique() == 8
    # ordinal's documentation: rating is response grouped by 20-point intervals.
    assert (w["rating"] == np.searchsorted([0, 20, 40, 60, 80], w["response"], side="right")).all()


def test_housing_reproduces_polr_with_frequency_weights():
    r = fit_proportional_odds(load_housing(), "Sat ~ Infl + Type + Cont", weights="Freq")
    ref = {
        "Infl[T.Medium]": (0.56639, 0.10465),
        "Infl[T.High]": (1.28882, 0.12716),
        "Type[T.Apartment]": (-0.57235, 0.11924),
        "Type[T.Atrium]": (-0.36619, 0.15517),
        "Type[T.Terrace]": (-1.09101, 0.15149),
        "Cont[T.High]": (0.36028, 0.09554),
    }
    for term, (est, se) in ref.items():
        assert r.coef.loc[term, "estimate"] == pytest.approx(est, abs=1e-3)
        assert r.coef.loc[term, "se"] == pytest.approx(se, abs=1e-3)
    assert list(r.thresholds.index) == ["Low|Medium", "Medium|High"]
    np.testing.assert_allclose(r.thresholds["estimate"], [-0.49614, 0.69071], atol=1e-3)
    np.testing.assert_allclose(r.thresholds["se"], [0.12485, 0.12547], atol=1e-3)
    assert r.loglik == pytest.approx(-1739.575, abs=1e-2)
    assert r.aic == pytest.approx(3495.149, abs=1e-2)
    assert r.n == 1681 and r.converged
    assert r.coef.loc["Infl[T.High]", "OR"] == pytest.approx(np.exp(1.28882), rel=1e-3)


def test_weights_equal_expanded_rows():
    h = load_housing()
    expanded = h.loc[h.index.repeat(h["Freq"])].reset_index(drop=True)
    a = fit_proportional_odds(h, "Sat ~ Infl + Cont", weights="Freq")
    b = fit_proportional_odds(expanded, "Sat ~ Infl + Cont")
    np.testing.assert_allclose(a.coef["estimate"], b.coef["estimate"], atol=1e-6)
    with pytest.raises(ValueError, match="whole-numbered"):
        fit_proportional_odds(h, "Sat ~ Infl", weights=h["Freq"] + 0.5)


def test_wine_reproduces_clm():
    r = fit_proportional_odds(load_wine(), "rating ~ temp + contact")
    assert r.coef.loc["temp[T.warm]", "estimate"] == pytest.approx(2.5031, abs=1e-3)
    assert r.coef.loc["temp[T.warm]", "se"] == pytest.approx(0.5287, abs=1e-3)
    assert r.coef.loc["contact[T.yes]", "estimate"] == pytest.approx(1.5278, abs=1e-3)
    assert r.coef.loc["contact[T.yes]", "se"] == pytest.approx(0.4766, abs=1e-3)
    np.testing.assert_allclose(
        r.thresholds["estimate"], [-1.3444, 1.2508, 3.4669, 5.0064], atol=1e-3
    )
    assert list(r.thresholds.index) == ["1|2", "2|3", "3|4", "4|5"]
    assert r.loglik == pytest.approx(-86.49, abs=1e-2)
    assert r.aic == pytest.approx(184.98, abs=1e-2)


def test_ucla_reproduces_polr():
    r = fit_proportional_odds(load_ucla(), "apply ~ pared + public + gpa")
    np.testing.assert_allclose(r.coef["estimate"], [1.04769, -0.05879, 0.61594], atol=1e-3)
    np.testing.assert_allclose(r.coef["se"], [0.2658, 0.2979, 0.2606], atol=1e-3)
    np.testing.assert_allclose(r.thresholds["estimate"], [2.2039, 4.2994], atol=1e-3)


def test_summary_states_direction_and_or_better_is_reciprocal():
    r = fit_proportional_odds(load_wine(), "rating ~ temp + contact")
    text = r.summary()
    assert "OR > 1 means higher (worse) rating" in text
    better = r.or_better()
    np.testing.assert_allclose(better["OR_better"], 1 / r.coef["OR"])
    np.testing.assert_allclose(better["OR_better_low"], 1 / r.coef["OR_high"])


def test_predict_proba_rows_sum_to_one_and_match_statsmodels():
    r = fit_proportional_odds(load_ucla(), "apply ~ pared + public + gpa")
    P = r.predict_proba()
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(P.to_numpy(), r.sm_result.predict(), atol=1e-8)


def test_lr_test_terms_matches_clm_anova():
    # anova(clm(rating ~ temp), clm(rating ~ temp + contact)): LR 11.043, df 1.
    r = fit_proportional_odds(load_wine(), "rating ~ temp + contact")
    lr = lr_test_terms(r).set_index("term")
    assert lr.loc["contact", "chi2"] == pytest.approx(11.043, abs=1e-2)
    assert lr.loc["contact", "df"] == 1
    h = fit_proportional_odds(load_housing(), "Sat ~ Infl + Type + Cont", weights="Freq")
    assert lr_test_terms(h).set_index("term").loc["Type", "df"] == 3


def test_cluster_covariance_changes_se_not_estimates():
    w = load_wine()
    a = fit_proportional_odds(w, "rating ~ temp + contact")
    b = fit_proportional_odds(w, "rating ~ temp + contact", cov_type="cluster", groups="judge")
    np.testing.assert_allclose(a.coef["estimate"], b.coef["estimate"], atol=1e-8)
    assert np.all(np.isfinite(b.coef["se"]))
    assert not np.allclose(a.coef["se"], b.coef["se"], rtol=1e-3)
    with pytest.raises(ValueError, match="groups"):
        fit_proportional_odds(w, "rating ~ temp", cov_type="cluster")


def test_unused_levels_are_dropped_and_missing_rows_counted():
    w = load_wine()
    w["rating"] = pd.Categorical(w["rating"], categories=[0, 1, 2, 3, 4, 5, 6], ordered=True)
    w.loc[[0, 5], "temp"] = np.nan
    r = fit_proportional_odds(w, "rating ~ temp + contact")
    assert r.outcome_levels == [1, 2, 3, 4, 5]
    assert r.dropped == {"temp": 2} and r.n == 70


# ---------------------------------------------------------------- bad input


def test_missing_column_lists_available():
    with pytest.raises(ValueError, match=r"\['tmp'\].*available columns.*'temp'"):
        fit_proportional_odds(load_wine(), "rating ~ tmp + contact")
    with pytest.raises(ValueError, match="rate"):
        fit_proportional_odds(load_wine(), "rate ~ temp")


@pytest.mark.parametrize(
    "outcome, message",
    [
        (["low", "high"] * 36, "no order"),
        (np.linspace(0, 1, 72), "fractional"),
        (pd.Categorical(["a", "b"] * 36, ordered=False), "unordered"),
        ([3] * 72, "single observed level"),
    ],
)
def test_non_ordinal_outcomes_are_refused(outcome, message):
    w = load_wine().assign(y=outcome)
    with pytest.raises(ValueError, match=message):
        fit_proportional_odds(w, "y ~ temp")


def test_perfect_separation_raises():
    rng = np.random.default_rng(1)
    x = np.repeat([0.0, 1.0], 30)
    y = np.where(x == 0, 0, rng.integers(1, 3, size=60))
    with pytest.raises(SeparationError, match="separation"):
        fit_proportional_odds(pd.DataFrame({"y": y, "x": x}), "y ~ x")


def test_non_convergence_raises(monkeypatch):
    monkeypatch.setattr(ordinal_mod, "MAX_ITER", 2)
    with pytest.raises(ConvergenceError, match="did not converge"):
        fit_proportional_odds(load_ucla(), "apply ~ pared + public + gpa")


def test_constant_covariate_is_refused():
    w = load_wine().assign(c=1.0)
    with pytest.raises(ValueError, match="constant"):
        fit_proportional_odds(w, "rating ~ temp + c")
