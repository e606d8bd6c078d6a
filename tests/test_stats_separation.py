"""Outcome levels and (quasi-)complete separation read from the fit (issue 22, item 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hypo.stats import SeparationError, find_separation, fit_outcome, fit_proportional_odds

#: The rule this replaces flagged |beta| x SD(x) > 10.
OLD_THRESHOLD = 10.0


def _issue22(seed: int = 0, n: int = 60) -> pd.DataFrame:
    """A covariate that is 0/1 by mRS >= 3, plus 0.001 jitter, and an unrelated age."""
    rng = np.random.default_rng(seed)
    mrs = rng.integers(0, 7, n)
    return pd.DataFrame(
        {
            "mrs": mrs,
            "x": (mrs >= 3).astype(float) + 0.001 * rng.normal(size=n),
            "age": rng.normal(70, 10, n),
        }
    )


def _strong(effect: float, n: int, seed: int) -> pd.DataFrame:
    """A strong but real effect: mRS cut from effect * z + logistic noise (overlap at every cut)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = np.digitize(effect * z + rng.logistic(size=n), [-8, -4, -1.5, 1.5, 4, 8])
    return pd.DataFrame({"mrs": y, "z": z})


def test_quasi_complete_separation_of_issue_22_is_refused_naming_column_and_cut():
    d = _issue22()
    with pytest.raises(SeparationError, match=r"separation of the outcome at cut 2\|3 by x \(\+\)"):
        fit_proportional_odds(d, "mrs ~ x + age")


def test_separation_is_reported_in_fit_warnings_when_asked_to_warn():
    r = fit_proportional_odds(_issue22(), "mrs ~ x + age", on_separation="warn")
    assert r.separation is not None and r.separation.columns == ["x"]
    assert r.separation.cuts == ["2|3"] and r.separation.min_side_probability > 0.99
    assert any(w.startswith("SeparationWarning") and "cut 2|3" in w for w in r.fit_warnings)
    assert "SeparationWarning" in r.summary()
    # The old rule would have let this fit through: its effect per SD is below 10.
    assert abs(r.coef.loc["x", "estimate"]) * r.exog["x"].std(ddof=0) < OLD_THRESHOLD
    # Its profile interval only closes (if at all) at an absurd OR, set by the jitter.
    p = fit_proportional_odds(_issue22(), "mrs ~ x", on_separation="warn", ci="profile")
    assert p.coef.loc["x", "OR_high"] > 1e20


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_issue_22_case_is_caught_for_other_draws(seed):
    with pytest.raises(SeparationError, match="cut 2\\|3"):
        fit_proportional_odds(_issue22(seed), "mrs ~ x + age")


def test_a_strong_real_effect_just_below_the_old_threshold_is_not_separated():
    d = _strong(9.5, 300, seed=2)
    r = fit_proportional_odds(d, "mrs ~ z", ci="profile")
    effect = r.coef.loc["z", "estimate"] * d["z"].std(ddof=0)
    assert 9.0 < effect < OLD_THRESHOLD
    assert r.separation is None and not r.fit_warnings
    assert np.isfinite(r.coef.loc["z", ["OR_low", "OR_high"]].to_numpy(float)).all()
    assert find_separation(r.codes, r.exog) is None


def test_a_strong_real_effect_above_the_old_threshold_is_no_longer_refused():
    d = _strong(12.0, 400, seed=3)
    r = fit_proportional_odds(d, "mrs ~ z")
    assert r.coef.loc["z", "estimate"] * d["z"].std(ddof=0) > OLD_THRESHOLD
    assert not r.fit_warnings


def test_exact_separation_direction_is_found_by_the_linear_programme():
    # mRS 0 exactly when x = 0: the likelihood rises for ever as beta grows.
    x = np.repeat([0.0, 1.0], 30)
    y = np.where(x == 0, 0, np.tile([1, 2, 3], 20))
    sep = find_separation(y, pd.DataFrame({"x": x, "noise": np.sin(np.arange(60))}))
    assert sep is not None and sep.columns == ["x"] and sep.cuts == ["0|1"]
    assert sep.kind == "direction" and sep.n_separated >= 30
    # Fitted with warn, the profile never closes above: an infinite upper end.
    r = fit_proportional_odds(
        pd.DataFrame({"y": y, "x": x}), "y ~ x", on_separation="warn", ci="profile"
    )
    assert np.isinf(r.coef.loc["x", "OR_high"]) and np.isfinite(r.coef.loc["x", "OR_low"])
    assert any(w.startswith("ProfileWarning") for w in r.fit_warnings)
    # Swap one patient across the split: overlap, no separation.
    y2 = y.copy()
    y2[0], y2[30] = 1, 0
    assert find_separation(y2, pd.DataFrame({"x": x})) is None


def test_logistic_coding_uses_the_exact_check():
    d = _issue22()
    with pytest.raises(SeparationError, match="separation"):
        fit_outcome(d, "x", "mrs", "mrs_0_2_vs_3_6")


def test_an_mrs_of_9_is_an_error_naming_column_and_values():
    d = _strong(1.0, 80, seed=0)
    d.loc[[3, 7, 9], "mrs"] = 9
    with pytest.raises(ValueError, match=r"outcome column 'mrs' has value\(s\) \[9\] \(3 row"):
        fit_proportional_odds(d, "mrs ~ z")
    d.loc[3, "mrs"] = -1
    with pytest.raises(ValueError, match=r"\[-1, 9\].*outside the mRS grades 0-6"):
        fit_proportional_odds(d, "mrs ~ z")


def test_explicit_levels_allow_another_scale_and_check_it():
    rng = np.random.default_rng(4)
    z = rng.normal(size=90)
    d = pd.DataFrame({"score": np.digitize(z + rng.logistic(size=90), [-1, 0, 1]) * 10, "z": z})
    r = fit_proportional_odds(d, "score ~ z", levels=[0, 10, 20, 30])
    assert r.outcome_levels == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="outside the mRS grades"):
        fit_proportional_odds(d, "score ~ z")
    with pytest.raises(ValueError, match=r"value\(s\) \['30'\].*not among levels=\[0, 10, 20\]"):
        fit_proportional_odds(d, "score ~ z", levels=[0, 10, 20])
