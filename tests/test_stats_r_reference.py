"""hypo.stats against reference numbers computed once in R (MASS, ordinal, VGAM, base R).

The numbers come from ``tests/data/stats/r/make_reference.R`` (R and package versions in
``versions.txt`` beside it); the suite only reads the CSV files it wrote. Agreement: 1e-3 on
estimates, standard errors and test statistics; profile-likelihood interval ends within
2e-3 of the exact R profile (uniroot on polr with an offset), which decides where MASS's
``confint`` (a spline through the profile) differs from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypo.stats import (
    fit_proportional_odds,
    generalized_odds_ratio,
    partial_po_fit,
    partial_po_table,
    profile_intervals,
    utility_mean_difference,
)

DATA = Path(__file__).parent / "data" / "stats"
REF = DATA / "r"
TOL = 1e-3
PROFILE_TOL = 2e-3


def _housing() -> pd.DataFrame:
    h = pd.read_csv(DATA / "housing.csv")
    h["Sat"] = pd.Categorical(h["Sat"], categories=["Low", "Medium", "High"], ordered=True)
    h["Infl"] = pd.Categorical(h["Infl"], categories=["Low", "Medium", "High"])
    h["Type"] = pd.Categorical(h["Type"], categories=["Tower", "Apartment", "Atrium", "Terrace"])
    h["Cont"] = pd.Categorical(h["Cont"], categories=["Low", "High"])
    return h


FITS = {
    "wine": (lambda: pd.read_csv(DATA / "wine.csv"), "rating ~ temp + contact", None),
    "housing": (_housing, "Sat ~ Infl + Type + Cont", "Freq"),
    "mrs_ppo": (lambda: pd.read_csv(DATA / "mrs_ppo.csv"), "mrs ~ treated + age_z", None),
}


@pytest.fixture(scope="module")
def fits():
    out = {}
    for name, (load, formula, weights) in FITS.items():
        out[name] = fit_proportional_odds(load(), formula, weights=weights, ci="profile")
    return out


def test_reference_files_name_their_r_versions():
    versions = (REF / "versions.txt").read_text().splitlines()
    assert versions[0].startswith("R version 4")
    assert [v.split()[0] for v in versions[1:]] == ["MASS", "ordinal", "VGAM"]


def test_po_fits_match_polr(fits):
    ref = pd.read_csv(REF / "polr_coef.csv")
    for name, r in ref.groupby("dataset"):
        coef = fits[name].coef
        assert list(coef.index) == list(r["term"])
        np.testing.assert_allclose(coef["estimate"], r["estimate"], atol=TOL)
        np.testing.assert_allclose(coef["se"], r["se"], atol=TOL)
        assert fits[name].loglik == pytest.approx(r["loglik"].iloc[0], abs=TOL)
    cuts = pd.read_csv(REF / "polr_cuts.csv")
    for name, r in cuts.groupby("dataset"):
        np.testing.assert_allclose(fits[name].thresholds["estimate"], r["estimate"], atol=TOL)


def test_profile_intervals_match_the_exact_r_profile(fits):
    ref = pd.read_csv(REF / "polr_profile_ci.csv")
    n = 0
    for name, r in ref.groupby("dataset"):
        fit = fits[name]
        assert fit.ci_method == "profile"
        ours = np.log(fit.coef.loc[r["term"], ["OR_low", "OR_high"]].to_numpy())
        exact = r[["exact_low", "exact_high"]].to_numpy()
        mass = r[["mass_low", "mass_high"]].to_numpy()
        assert np.max(np.abs(ours - exact)) < PROFILE_TOL
        # Where MASS's interpolated ends differ from ours by more, the exact profile
        # is closer to ours.
        far = np.abs(ours - mass) >= PROFILE_TOL
        assert np.all(np.abs(ours - exact)[far] < np.abs(mass - exact)[far])
        n += ours.size
    assert n == 20


def test_profile_interval_is_wider_where_the_likelihood_is_skewed_and_wald_stays_default():
    w = pd.read_csv(DATA / "wine.csv")
    wald = fit_proportional_odds(w, "rating ~ temp + contact")
    assert wald.ci_method == "wald"
    prof = profile_intervals(wald)
    assert (prof["closed_low"] & prof["closed_high"]).all()
    # Same estimate; the profile ends differ from the symmetric Wald ends.
    lo, hi = np.log(wald.coef["OR_low"]), np.log(wald.coef["OR_high"])
    assert np.all(np.abs(prof["low"].to_numpy() - lo.to_numpy()) > 1e-3)
    assert np.all((prof["low"] < prof["estimate"]) & (prof["estimate"] < prof["high"]))
    np.testing.assert_allclose(hi - lo, 2 * 1.959964 * wald.coef["se"], rtol=1e-6)


@pytest.mark.parametrize("name", ["wine", "mrs_ppo"])
def test_partial_po_matches_clm_and_vglm(fits, name):
    ref = pd.read_csv(REF / "partial_po.csv")
    ref = ref[ref["dataset"] == name]
    lr = pd.read_csv(REF / "partial_po_lr.csv").set_index("dataset").loc[name]
    fit = fits[name]
    ppo = partial_po_fit(fit, lr["term"])
    rows = ppo.coef[ppo.coef["term"] == ref["column"].iloc[0]]
    assert list(rows["cut"]) == list(ref["cut"])
    np.testing.assert_allclose(rows["estimate"], ref["estimate"], atol=TOL)
    np.testing.assert_allclose(rows["se"], ref["se"], atol=TOL)
    assert 2 * (ppo.loglik - fit.loglik) == pytest.approx(lr["chi2"], abs=TOL)


def test_partial_po_table_reports_the_failing_term_with_r_numbers(fits):
    ref = pd.read_csv(REF / "partial_po.csv")
    ref = ref[ref["dataset"] == "mrs_ppo"]
    lr = pd.read_csv(REF / "partial_po_lr.csv").set_index("dataset").loc["mrs_ppo"]
    t = partial_po_table(fits["mrs_ppo"])
    # treated breaks proportional odds by construction; age_z does not.
    assert set(t["term"]) == {"treated"}
    assert (t["status"] == "estimated").all()
    np.testing.assert_allclose(np.log(t["OR"]), ref["estimate"], atol=TOL)
    assert t["lr_chi2"].iloc[0] == pytest.approx(lr["chi2"], abs=TOL)
    assert t["lr_p"].iloc[0] == pytest.approx(lr["p"], abs=TOL)
    assert (t["lr_df"] == lr["df"]).all()
    assert (t["OR_low"] < t["OR"]).all() and (t["OR"] < t["OR_high"]).all()
    assert (t["brant_p"] < 0.05).all() or (t["nominal_p"] < 0.05).all()


@pytest.mark.parametrize(
    "dataset, load",
    [
        ("mrs_ppo_treated", lambda: _groups(pd.read_csv(DATA / "mrs_ppo.csv"), "mrs", "treated", 0, 1)),
        ("wine_temp", lambda: _groups(pd.read_csv(DATA / "wine.csv"), "rating", "temp", "cold", "warm")),
    ],
)  # fmt: skip
def test_generalized_odds_ratio_matches_base_r_pair_counts(dataset, load):
    ref = pd.read_csv(REF / "generalized_or.csv")
    ref = ref[ref["dataset"] == dataset].set_index("measure")
    ours = generalized_odds_ratio(*load()).set_index("measure")
    for m in ("generalized_odds_ratio", "wmw_odds"):
        for c in ("pairs_higher", "pairs_lower", "pairs_tied"):
            assert ours.loc[m, c] == ref.loc[m, c]
        for c in ("OR", "OR_low", "OR_high", "p"):
            assert ours.loc[m, c] == pytest.approx(ref.loc[m, c], abs=TOL), (m, c)
    assert ours.loc["generalized_odds_ratio", "ties"] == "excluded"
    assert ours.loc["wmw_odds", "ties"] == "split"


def test_utility_mean_difference_matches_r():
    ref = pd.read_csv(REF / "utility_mrs.csv").iloc[0]
    ref_mrs, cmp_mrs = _groups(pd.read_csv(DATA / "mrs_ppo.csv"), "mrs", "treated", 0, 1)
    u = utility_mean_difference(ref_mrs, cmp_mrs, n_resamples=500, seed=3).iloc[0]
    for c in ("mean_reference", "mean_comparison", "difference"):
        assert u[c] == pytest.approx(ref[c], abs=1e-12)
    assert u["p"] == pytest.approx(ref["welch_p"], abs=TOL)


def _groups(d: pd.DataFrame, outcome: str, group: str, ref, cmp_):
    return d.loc[d[group] == ref, outcome].to_numpy(), d.loc[d[group] == cmp_, outcome].to_numpy()


def max_differences() -> dict[str, float]:
    """The largest differences to R (for the record: ``python -m tests.test_stats_r_reference``)."""
    fits_ = {n: fit_proportional_odds(ld(), f, weights=w, ci="profile") for n, (ld, f, w) in FITS.items()}  # fmt: skip
    coef = pd.read_csv(REF / "polr_coef.csv")
    ci = pd.read_csv(REF / "polr_profile_ci.csv")
    d_est, d_se, d_exact, d_mass = 0.0, 0.0, 0.0, 0.0
    for name, r in coef.groupby("dataset"):
        c = fits_[name].coef.loc[r["term"]]
        d_est = max(d_est, np.max(np.abs(c["estimate"].to_numpy() - r["estimate"].to_numpy())))
        d_se = max(d_se, np.max(np.abs(c["se"].to_numpy() - r["se"].to_numpy())))
    for name, r in ci.groupby("dataset"):
        ours = np.log(fits_[name].coef.loc[r["term"], ["OR_low", "OR_high"]].to_numpy())
        d_exact = max(d_exact, np.max(np.abs(ours - r[["exact_low", "exact_high"]].to_numpy())))
        d_mass = max(d_mass, np.max(np.abs(ours - r[["mass_low", "mass_high"]].to_numpy())))
    g = pd.read_csv(REF / "generalized_or.csv")
    d_g = 0.0
    for ds, (dfile, y, grp, a, b) in {
        "mrs_ppo_treated": ("mrs_ppo.csv", "mrs", "treated", 0, 1),
        "wine_temp": ("wine.csv", "rating", "temp", "cold", "warm"),
    }.items():
        ours = generalized_odds_ratio(*_groups(pd.read_csv(DATA / dfile), y, grp, a, b))
        ref = g[g["dataset"] == ds]
        cols = ["OR", "OR_low", "OR_high", "p"]
        d_g = max(d_g, np.max(np.abs(ours[cols].to_numpy(float) - ref[cols].to_numpy(float))))
    ppo_ref = pd.read_csv(REF / "partial_po.csv")
    d_ppo = 0.0
    for name, term in (("wine", "contact"), ("mrs_ppo", "treated")):
        p = partial_po_fit(fits_[name], term).coef
        r = ppo_ref[ppo_ref["dataset"] == name]
        e = p[p["term"] == r["column"].iloc[0]]["estimate"].to_numpy()
        d_ppo = max(d_ppo, np.max(np.abs(e - r["estimate"].to_numpy())))
    return {
        "polr estimate": d_est,
        "polr se": d_se,
        "profile end vs exact R profile (log OR)": d_exact,
        "profile end vs MASS confint (log OR)": d_mass,
        "partial PO per-cut estimate": d_ppo,
        "generalized OR / WMW odds (OR, ends, p)": d_g,
    }


if __name__ == "__main__":
    for k, v in max_differences().items():
        print(f"{k}: {v:.2e}")
