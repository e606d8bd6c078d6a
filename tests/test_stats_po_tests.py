"""Brant and nominal tests against R (packages brant and ordinal), and the sensitivity fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypo.stats import (
    brant_test,
    fit_proportional_odds,
    nominal_test,
    partial_po_fit,
    per_cut_logistic,
)
from hypo.stats.po_tests import _ppo_negloglik_grad

DATA = Path(__file__).parent / "data" / "stats"


@pytest.fixture(scope="module")
def wine_fit():
    return fit_proportional_odds(pd.read_csv(DATA / "wine.csv"), "rating ~ temp + contact")


def test_brant_omnibus_matches_r(wine_fit):
    b = brant_test(wine_fit).set_index("term")
    assert list(b.index) == ["omnibus", "temp", "contact"]
    assert b.loc["omnibus", "chi2"] == pytest.approx(1.52, abs=1e-2)
    assert b.loc["omnibus", "df"] == 6
    assert b.loc["omnibus", "p"] == pytest.approx(0.958, abs=1e-2)
    assert (b.loc[["temp", "contact"], "df"] == 3).all()


def test_nominal_test_matches_r(wine_fit):
    n = nominal_test(wine_fit).set_index("term")
    assert n.loc["temp", "chi2"] == pytest.approx(3.175, abs=1e-2)
    assert n.loc["temp", "p"] == pytest.approx(0.365, abs=1e-2)
    assert n.loc["contact", "chi2"] == pytest.approx(0.567, abs=1e-2)
    assert n.loc["contact", "p"] == pytest.approx(0.904, abs=1e-2)
    assert (n["df"] == 3).all()


def test_partial_po_likelihood_reduces_to_proportional_odds(wine_fit):
    # With no relaxed column the hand-written likelihood must equal statsmodels'.
    params = np.concatenate([wine_fit.thresholds["estimate"], wine_fit.coef["estimate"]])
    nll, grad = _ppo_negloglik_grad(
        params, wine_fit.codes, wine_fit.exog.to_numpy(float), np.zeros((72, 0)), 5
    )
    assert -nll == pytest.approx(wine_fit.loglik, abs=1e-8)
    assert np.max(np.abs(grad)) < 1e-3  # the PO optimum is a stationary point
    # and the analytic gradient agrees with finite differences away from the optimum
    rng = np.random.default_rng(0)
    Z = wine_fit.exog[["contact[T.yes]"]].to_numpy(float)
    X = wine_fit.exog[["temp[T.warm]"]].to_numpy(float)
    p0 = np.concatenate([[-1.0, 1.0, 3.0, 5.0], [2.0], rng.normal(1.5, 0.1, 4)])
    f = lambda p: _ppo_negloglik_grad(p, wine_fit.codes, X, Z, 5)[0]  # noqa: E731
    num = np.array([(f(p0 + e) - f(p0 - e)) / 2e-6 for e in np.eye(len(p0)) * 1e-6])
    np.testing.assert_allclose(_ppo_negloglik_grad(p0, wine_fit.codes, X, Z, 5)[1], num, atol=1e-4)


def test_partial_po_fit_flags_diverging_cuts(wine_fit):
    fit = partial_po_fit(wine_fit, "temp")
    temp = fit.coef[fit.coef["term"] == "temp[T.warm]"].set_index("cut")
    assert list(temp.index) == ["1|2", "2|3", "3|4", "4|5"]
    # No warm wine was rated 1, none cold was rated 5: those cuts diverge and say so.
    assert temp.loc["1|2", "note"].startswith("separation")
    assert temp.loc["2|3", "note"] == ""
    assert fit.loglik > wine_fit.loglik


def test_per_cut_logistic_matches_binary_fits(wine_fit):
    t = per_cut_logistic(wine_fit)
    assert len(t) == 4 * 2
    row = t[(t["cut"] == "rating > 2") & (t["term"] == "contact[T.yes]")].iloc[0]
    w = pd.read_csv(DATA / "wine.csv")
    import statsmodels.formula.api as smf

    ref = smf.logit("y ~ temp + contact", w.assign(y=(w["rating"] > 2).astype(int))).fit(disp=0)
    assert row["estimate"] == pytest.approx(ref.params["contact[T.yes]"], abs=1e-6)
    assert row["po_estimate"] == pytest.approx(wine_fit.coef.loc["contact[T.yes]", "estimate"])


def test_brant_detects_non_proportional_odds():
    # x shifts only the top cut: proportional odds is false by construction.
    rng = np.random.default_rng(3)
    n = 600
    x = rng.integers(0, 2, n).astype(float)
    latent = rng.logistic(size=n)
    y = np.digitize(latent, [-1.0, 0.0, 1.0])
    y = np.where((x == 1) & (y == 2) & (rng.random(n) < 0.8), 3, y)
    r = fit_proportional_odds(pd.DataFrame({"y": y, "x": x}), "y ~ x")
    assert brant_test(r).set_index("term").loc["omnibus", "p"] < 1e-3
    assert nominal_test(r).set_index("term").loc["x", "p"] < 1e-3


def test_po_tests_need_three_levels():
    w = pd.read_csv(DATA / "wine.csv")
    r = fit_proportional_odds(w.assign(y=(w["rating"] > 2).astype(int)), "y ~ temp")
    with pytest.raises(ValueError, match="3 or more"):
        brant_test(r)
