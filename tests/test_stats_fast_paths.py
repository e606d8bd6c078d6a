"""Fast paths of the ordinal fits give the slow paths' numbers to the last bit (the
bootstrap's speed must not move a number): the batched finite differences of the logit
model, and design matrices of plain numeric formulas built without patsy."""

import numpy as np
import pandas as pd
import patsy
import pytest
from statsmodels.tools.numdiff import approx_fprime, approx_hess3

from hypo.stats import _design
from hypo.stats.ordinal import _LogitOrderedModel, fit_proportional_odds


def _model(seed: int, n: int, p: int, levels: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.1, 30, p)
    eta = X @ rng.normal(0, 0.05, p)
    y = np.digitize(
        eta + rng.logistic(size=n), np.quantile(eta, np.linspace(0, 1, levels + 1)[1:-1])
    )
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


def _frame(seed: int = 0, n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "mrs": rng.integers(0, 7, n),
            "z": rng.normal(size=n),
            "age": rng.integers(40, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "flag": rng.random(n) < 0.5,
        }
    )


def test_numeric_design_built_directly_equals_patsy():
    d = _frame()
    first = _design.build_design(d, "mrs ~ z + age")  # through patsy, remembered
    rows = np.random.default_rng(1).integers(0, len(d), len(d))
    sample = d.iloc[rows].reset_index(drop=True)
    again = _design.build_design(sample, "mrs ~ z + age")
    assert _design._numeric_design("z + age", sample) is not None  # the direct path
    want = patsy.dmatrix("z + age", sample, return_type="dataframe").drop(columns="Intercept")
    pd.testing.assert_frame_equal(again.X, want, check_exact=True)
    assert again.design_info.column_names == first.design_info.column_names
    fit_a = fit_proportional_odds(sample, "mrs ~ z + age")
    _design._NUMERIC_DESIGNS.clear()
    fit_b = fit_proportional_odds(sample, "mrs ~ z + age")
    pd.testing.assert_frame_equal(fit_a.coef, fit_b.coef, check_exact=True)


@pytest.mark.parametrize("rhs", ["z + C(sex)", "z + sex", "z + flag", "np.log(age) + z", "z * age",
                                 "z + age - 1"])  # fmt: skip
def test_other_formulas_go_through_patsy(rhs):
    d = _frame()
    _design.build_design(d, f"mrs ~ {rhs}")
    assert _design._numeric_design(rhs, d) is None
