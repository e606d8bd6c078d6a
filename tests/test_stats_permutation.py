"""Under the null (outcome permuted across patients) p-values must be uniform."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from hypo._util import rng_for
from hypo.stats import fit_proportional_odds

N_PERMUTATIONS = 200


def test_permuted_outcome_gives_uniform_p_values():
    rng = rng_for(20240601, "permutation-data")
    n = 60
    df = pd.DataFrame({"x": rng.normal(size=n)})
    # A real effect in the unpermuted data, so uniformity is not a property of the data.
    df["mrs"] = np.digitize(1.5 * df["x"] + rng.logistic(size=n), [-1.5, -0.5, 0.5, 1.5])
    observed = fit_proportional_odds(df, "mrs ~ x").coef.loc["x", "p"]
    assert observed < 1e-3
    p = np.empty(N_PERMUTATIONS)
    for b in range(N_PERMUTATIONS):
        perm = rng_for(20240601, "permutation", b).permutation(df["mrs"].to_numpy())
        p[b] = fit_proportional_odds(df.assign(mrs=perm), "mrs ~ x").coef.loc["x", "p"]
    ks = stats.kstest(p, "uniform")
    assert ks.pvalue > 0.01, f"permutation p-values not uniform: KS D={ks.statistic:.3f}"
    assert abs(np.mean(p < 0.05) - 0.05) < 0.05
