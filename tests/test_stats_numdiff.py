"""The batched finite differences of the logit ordinal model equal statsmodels' own to the
last bit (the bootstrap's speed must not move a number)."""

import numpy as np
import pytest
from statsmodels.tools.numdiff import approx_fprime, approx_hess3

from hypo.stats.ordinal import _LogitOrderedModel


def _model(seed: int, n: int, p: int, levels: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.1, 30, p)
    eta = X @ rng.normal(0, 0.05, p)
    y = np.digitize(eta + rng.logistic(size=n), np.quantile(eta, np.linspace(0, 1, levels + 1)[1:-1]))
    model = _LogitOrderedModel(y, X, distr="logit")
    return model, rng


@pytest.mark.parametrize("seed", range(6))
def test_score_and_hessian_equal_statsmodels_bit_for_bit(seed):
    model, rng = _model(seed, n=int(60 + 40 * seed), p=1 + seed % 4, levels=3 + seed % 5)
    for _ in range(5):
        params = model.start_params + rng.normal(0, 0.3, len(model.start_params))
        want = approx_fprime(params, model.loglike, centered=True).ravel()
        np.testing.assert_array_equal(model.score(params), want)
        np.testing.assert_array_equal(model.hessian(params), approx_hess3(params, model.loglike))
        rows = model._loglike_rows(np.stack([params, params * 1.5]))
        assert rows[0] == model.loglike(params) and rows[1] == model.loglike(params * 1.5)
