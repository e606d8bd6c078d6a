"""Generalized odds ratio, WMW odds and the utility-weighted mRS: coverage and edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hypo.stats import generalized_odds_ratio, utility_mean_difference, utility_weighted_mrs

# mRS distributions of two arms (a shift towards worse outcome in the comparison arm).
P_REF = np.array([0.10, 0.15, 0.15, 0.20, 0.20, 0.10, 0.10])
P_CMP = np.array([0.05, 0.10, 0.15, 0.20, 0.20, 0.15, 0.15])
REPS = 400


def _true_measures(p_ref, p_cmp) -> dict[str, float]:
    below = np.concatenate([[0.0], np.cumsum(p_ref)[:-1]])  # P(ref < level)
    above = 1.0 - np.cumsum(p_ref)  # P(ref > level)
    pc, pd_ = float(p_cmp @ below), float(p_cmp @ above)
    pt = 1 - pc - pd_
    return {"generalized_odds_ratio": pc / pd_, "wmw_odds": (pc + pt / 2) / (pd_ + pt / 2)}


def _band(reps: int, level: float = 0.95, k: float = 3.0) -> tuple[float, float]:
    sd = np.sqrt(level * (1 - level) / reps)
    return level - k * sd, level + k * sd


@pytest.mark.parametrize("n", [40, 120])
def test_intervals_cover_the_true_measure_at_95_percent(n):
    truth = _true_measures(P_REF, P_CMP)
    hits = {m: 0 for m in truth}
    for r in range(REPS):
        rng = np.random.default_rng([2024, n, r])
        a, b = rng.choice(7, n, p=P_REF), rng.choice(7, n, p=P_CMP)
        t = generalized_odds_ratio(a, b).set_index("measure")
        for m, v in truth.items():
            hits[m] += bool(t.loc[m, "OR_low"] <= v <= t.loc[m, "OR_high"])
    lo, hi = _band(REPS)  # 3 binomial SDs around 0.95 for 400 replications: [0.917, 0.983]
    for m, h in hits.items():
        assert lo <= h / REPS <= hi, (m, n, h / REPS)


def test_measures_are_one_under_no_difference_and_flip_with_the_groups():
    rng = np.random.default_rng(0)
    a, b = rng.choice(7, 80, p=P_REF), rng.choice(7, 90, p=P_CMP)
    t = generalized_odds_ratio(a, b, names=("control", "treated")).set_index("measure")
    s = generalized_odds_ratio(b, a).set_index("measure")
    for m in ("generalized_odds_ratio", "wmw_odds"):
        assert t.loc[m, "OR"] * s.loc[m, "OR"] == pytest.approx(1.0)
        assert t.loc[m, "OR_low"] * s.loc[m, "OR_high"] == pytest.approx(1.0)
        assert t.loc[m, "p"] == pytest.approx(s.loc[m, "p"])
    assert t.loc["wmw_odds", "n_reference"] == 80 and t.loc["wmw_odds", "n_comparison"] == 90
    assert "treated tends to higher scores" in t.loc["wmw_odds", "direction"]
    assert t["ci_method"].str.contains("delta method").all()
    # Ties: excluded by the generalized OR, split by the WMW odds, so WMW is nearer 1.
    assert 1 < t.loc["wmw_odds", "OR"] < t.loc["generalized_odds_ratio", "OR"]
    # The WMW odds are the Mann-Whitney U of the comparison group as odds.
    u = stats.mannwhitneyu(b, a).statistic / (len(a) * len(b))
    assert t.loc["wmw_odds", "OR"] == pytest.approx(u / (1 - u))
    same = generalized_odds_ratio(a, a).set_index("measure")
    assert same["OR"].tolist() == pytest.approx([1.0, 1.0])


def test_no_pair_on_one_side_is_not_estimable_and_says_so():
    t = generalized_odds_ratio([0, 0, 1, 1], [1, 2, 3]).set_index("measure")
    assert t.loc["generalized_odds_ratio", "OR"] == np.inf
    assert np.isnan(t.loc["generalized_odds_ratio", "OR_low"])
    assert "no pair" in t.loc["generalized_odds_ratio", "note"]
    with pytest.raises(ValueError, match="group 'comparison'.*non-numeric"):
        generalized_odds_ratio([0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="no non-missing"):
        generalized_odds_ratio([0, 1], [np.nan])


def test_utility_weights_are_chaisinanunkul_2015():
    u = utility_weighted_mrs(pd.Series([0, 1, 2, 3, 4, 5, 6, np.nan], name="mrs"))
    assert u.iloc[:7].tolist() == [1.0, 0.91, 0.76, 0.65, 0.33, 0.0, 0.0]
    assert np.isnan(u.iloc[7])
    with pytest.raises(ValueError, match="mRS must be a whole number 0-6"):
        utility_weighted_mrs(pd.Series([0, 9], name="mrs"))


def test_utility_difference_bootstrap_is_seeded_and_covers():
    rng = np.random.default_rng(11)
    a, b = rng.choice(7, 60, p=P_REF), rng.choice(7, 70, p=P_CMP)
    one = utility_mean_difference(a, b, n_resamples=400, seed=5)
    two = utility_mean_difference(a, b, n_resamples=400, seed=5)
    other = utility_mean_difference(a, b, n_resamples=400, seed=6)
    pd.testing.assert_frame_equal(one, two)
    assert one["difference_low"].iloc[0] != other["difference_low"].iloc[0]
    r = one.iloc[0]
    w = np.array([1.0, 0.91, 0.76, 0.65, 0.33, 0.0, 0.0])
    assert r["difference"] == pytest.approx(w[b].mean() - w[a].mean())
    assert r["difference_low"] < r["difference"] < r["difference_high"]
    assert "Chaisinanunkul" in r["weights"] and "seed 5" in r["ci_method"]
    # Coverage of the true difference (percentile bootstrap, 200 replications).
    true = float(w @ P_CMP - w @ P_REF)
    reps = 200
    hits = 0
    for i in range(reps):
        g = np.random.default_rng([99, i])
        t = utility_mean_difference(
            g.choice(7, 80, p=P_REF), g.choice(7, 80, p=P_CMP), n_resamples=300, seed=i
        ).iloc[0]
        hits += bool(t["difference_low"] <= true <= t["difference_high"])
    lo, hi = _band(reps)
    assert lo <= hits / reps <= hi
