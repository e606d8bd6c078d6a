"""Proportional-odds (cumulative logit) models of an ordinal outcome such as mRS at 3 months.

Sign convention (statsmodels ``OrderedModel``, R ``MASS::polr``, ``ordinal::clm``, Stata
``ologit``)::

    logit P(Y <= j | x) = theta_j - x' beta

so ``beta > 0`` (OR = exp(beta) > 1) means a *higher* outcome level, i.e. a *worse* mRS.
Stroke papers usually quote the common OR for a *better* outcome, exp(-beta): see
:meth:`OrdinalResult.or_better`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from statsmodels.miscmodels.ordinal_model import OrderedModel
from statsmodels.tools import numdiff as _numdiff

from ._cumlogit import ppo_negloglik_grad
from ._design import Design, build_design, check_outcome_levels, ordinal_codes
from .separation import Separation, separation_in_fit

__all__ = [
    "ConvergenceError",
    "OrdinalFitError",
    "OrdinalResult",
    "SeparationError",
    "fit_proportional_odds",
    "lr_test_terms",
    "profile_intervals",
]

Z95 = stats.norm.ppf(0.975)

#: Profile intervals look for an end only where |beta| x range(x) <= this many logits (an OR
#: of e^40 across the covariate's range) or 4 x the estimate's, whichever is larger; an end
#: beyond is open (+/-inf): the likelihood does not fall far enough, as under separation.
PROFILE_MAX_LOGIT = 40.0
#: BFGS iteration cap; well-posed mRS models converge in < 100.
MAX_ITER = 2000
#: Largest mean score (per patient) accepted when BFGS stops on finite-difference precision.
GRAD_ACCEPT = 1e-5


class OrdinalFitError(ValueError):
    """A model could not be fitted to give trustworthy numbers."""


class ConvergenceError(OrdinalFitError):
    """The optimiser stopped before the likelihood was maximised."""


class SeparationError(OrdinalFitError):
    """(Quasi-)complete separation: some coefficient runs off to infinity."""


@dataclass
class OrdinalResult:
    """A fitted proportional-odds model.

    Attributes
    ----------
    coef : DataFrame
        Indexed by design-matrix column; columns ``estimate, se, z, p, OR, OR_low, OR_high``
        (log-odds scale, Wald p, 95 % interval as ``ci_method`` says: ``"wald"`` or
        ``"profile"``). OR > 1 means a higher (worse) outcome level.
    thresholds : DataFrame
        Cut-points ``theta_j`` on the natural (logit) scale, indexed ``"0|1"``, ``"1|2"``...
        with delta-method standard errors.
    loglik, aic : float
        Log-likelihood and Akaike information criterion.
    n : float
        Number of patients (the sum of the frequency weights when weights are given).
    """

    coef: pd.DataFrame
    thresholds: pd.DataFrame
    loglik: float
    aic: float
    n: float
    converged: bool
    formula: str
    outcome: str
    outcome_levels: list
    link: str
    cov_type: str
    sm_result: object
    design: Design = field(repr=False)
    codes: np.ndarray = field(repr=False)  # outcome codes 0..K-1 of the rows fitted (expanded)
    exog: pd.DataFrame = field(repr=False)  # design rows fitted (expanded by weights)
    groups: np.ndarray | None = field(default=None, repr=False)
    dropped: dict = field(default_factory=dict)
    fit_warnings: list = field(default_factory=list)
    separation: Separation | None = None  # set when fitted with on_separation="warn"
    ci_method: str = "wald"  # how coef's OR_low / OR_high were computed

    @property
    def n_levels(self) -> int:
        return len(self.outcome_levels)

    @property
    def params(self) -> pd.Series:
        """Coefficients (log-odds, higher = worse) followed by natural-scale thresholds."""
        return pd.concat([self.coef["estimate"], self.thresholds["estimate"]])

    def or_better(self) -> pd.DataFrame:
        """Odds ratios for a *better* (lower) outcome, exp(-beta) = 1/OR, with their 95 % CI
        (the reciprocal of the model's interval, Wald or profile)."""
        return pd.DataFrame(
            {
                "OR_better": 1.0 / self.coef["OR"],
                "OR_better_low": 1.0 / self.coef["OR_high"],
                "OR_better_high": 1.0 / self.coef["OR_low"],
                "p": self.coef["p"],
            }
        )

    def linear_predictor(self, data: pd.DataFrame | None = None) -> np.ndarray:
        """x' beta for ``data`` (default: the rows fitted, before weight expansion).

        Higher values mean a higher (worse) predicted outcome.
        """
        X = self.design.X if data is None else self.design.matrix_for(data)
        return X.to_numpy(float) @ self.coef["estimate"].to_numpy()

    def predict_proba(self, data: pd.DataFrame | None = None) -> pd.DataFrame:
        """P(Y = level | x) for every outcome level; rows as in ``data``."""
        eta = self.linear_predictor(data)
        theta = self.thresholds["estimate"].to_numpy()
        cdf = _cdf(self.link, theta[None, :] - eta[:, None])
        cdf = np.hstack([np.zeros((len(eta), 1)), cdf, np.ones((len(eta), 1))])
        return pd.DataFrame(np.diff(cdf, axis=1), columns=self.outcome_levels)

    def summary(self) -> str:
        """Plain-text summary that says in words which way the odds ratios point."""
        lines = [
            f"Proportional-odds ({self.link}) model: {self.formula}",
            f"n = {self.n:g} ({'sum of frequency weights' if self.design.weights is not None else 'patients'})"
            + (f"; rows dropped for missing values: {self.dropped}" if self.dropped else ""),
            f"outcome levels (low to high): {self.outcome_levels}",
            f"log-likelihood = {self.loglik:.3f}, AIC = {self.aic:.3f}, "
            f"converged = {self.converged}, covariance = {self.cov_type}, "
            f"95% CI = {self.ci_method}",
            "",
            f"logit P({self.outcome} <= j) = theta_j - x'beta.",
            f"OR > 1 means higher (worse) {self.outcome}; "
            f"the OR for a better (lower) {self.outcome} is exp(-beta) = 1/OR (see or_better()).",
            "",
            self.coef.to_string(float_format=lambda v: f"{v:.4g}"),
            "",
            "Thresholds (natural scale):",
            self.thresholds.to_string(float_format=lambda v: f"{v:.4g}"),
        ]
        if self.fit_warnings:
            lines += ["", "Warnings during the fit:", *[f"  {w}" for w in self.fit_warnings]]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _cdf(link: str, x: np.ndarray) -> np.ndarray:
    if link == "logit":
        return stats.logistic.cdf(x)
    if link == "probit":
        return stats.norm.cdf(x)
    raise ValueError(f"link {link!r}: expected 'logit' or 'probit'")


def _expand(design: Design) -> tuple[pd.Series, pd.DataFrame, np.ndarray | None]:
    """Repeat each row by its frequency weight (polr's ``weights=`` for counts)."""
    y, X, g = design.y, design.X, design.groups
    if design.weights is None:
        return y, X, g
    w = design.weights
    if np.any(w != np.round(w)):
        raise ValueError(
            "weights must be whole-numbered frequency weights (counts of identical patients); "
            f"got e.g. {w[w != np.round(w)][:3].tolist()}"
        )
    reps = w.astype(int)
    pos = np.repeat(np.arange(len(y)), reps)
    y2 = y.iloc[pos].reset_index(drop=True)
    X2 = X.iloc[pos].reset_index(drop=True)
    g2 = None if g is None else g[pos]
    return y2, X2, g2


def _check_exog(X: pd.DataFrame, formula: str) -> None:
    if X.shape[1] == 0:
        raise ValueError(f"formula {formula!r} has no covariate columns to estimate")
    const = [c for c in X.columns if np.ptp(X[c].to_numpy(float)) == 0]
    if const:
        raise ValueError(
            f"formula {formula!r}: design column(s) {const} are constant in the rows fitted; "
            f"their effect cannot be estimated (thresholds play the intercept's role)"
        )
    rank = np.linalg.matrix_rank(X.to_numpy(float))
    if rank < X.shape[1]:
        raise ValueError(
            f"formula {formula!r}: design columns {list(X.columns)} are collinear "
            f"(rank {rank} < {X.shape[1]})"
        )


class _LogitOrderedModel(OrderedModel):
    """OrderedModel with the logistic cdf/pdf evaluated by ``scipy.special.expit``.

    Same likelihood; scipy.stats' generic ``logistic.cdf`` costs most of a fit's time in
    the finite-difference score (bootstrap and permutation loops fit hundreds of models).
    """

    def cdf(self, x):
        return special.expit(x)

    def pdf(self, x):
        p = special.expit(x)
        return p * (1 - p)

    # The finite-difference score calls ``loglike`` hundreds of thousands of times in a
    # bootstrap; statsmodels reaches it through five methods and their argument checks.
    # This is the same sequence of array operations (``transform_threshold_params``,
    # ``_bounds``, ``_linpred``, ``prob``, ``loglikeobs``) in one call, so every value is
    # the same to the last bit; a model with an offset takes statsmodels' own path.

    def loglikeobs(self, params):
        if self.offset is not None or self.exog is None:
            return super().loglikeobs(params)
        params = np.asarray(params)
        k = self.k_levels - 1
        th_params = params[-k:]
        thresh = np.concatenate((th_params[:1], np.exp(th_params[1:]))).cumsum()
        thresh = np.concatenate(([-np.inf], thresh, [np.inf]))
        xb = np.asarray(self.exog).dot(params[:-k])
        endog = self.endog
        low = thresh[endog] - xb
        upp = thresh[endog + 1] - xb
        prob = np.maximum(special.expit(upp) - special.expit(low), 0)
        return np.log(prob + 1e-20)

    def loglike(self, params):
        return self.loglikeobs(params).sum()

    # BFGS asks for statsmodels' finite-difference score (2 x p log-likelihoods per step)
    # and, once, its finite-difference Hessian (2 p (p + 1) of them): four fifths of a
    # bootstrap's time went to those small calls one by one. ``_loglike_rows`` evaluates
    # many parameter vectors at once with the operations of ``loglikeobs`` element by
    # element (one matrix-vector product per vector, row-wise sums), so the score and the
    # Hessian below equal statsmodels' ``approx_fprime(centered=True)`` and ``approx_hess3``
    # to the last bit (tests/test_ordinal_numdiff.py).

    def _loglike_rows(self, P):
        """``loglike`` of each row of ``P`` (m x n_params), as one array."""
        k = self.k_levels - 1
        th = P[:, -k:]
        thresh = np.concatenate((th[:, :1], np.exp(th[:, 1:])), axis=1).cumsum(axis=1)
        inf = np.full((len(P), 1), np.inf)
        thresh = np.concatenate((-inf, thresh, inf), axis=1)
        exog = np.asarray(self.exog)
        xb = np.stack([exog.dot(p[:-k]) for p in P])
        endog = self.endog
        low = thresh[:, endog] - xb
        upp = thresh[:, endog + 1] - xb
        prob = np.maximum(special.expit(upp) - special.expit(low), 0)
        return np.log(prob + 1e-20).sum(axis=1)

    def score(self, params):
        if self.offset is not None or self.exog is None:
            return super().score(params)
        x = np.asarray(params)
        n = len(x)
        eps = _numdiff._get_epsilon(x, 3, None, n) / 2.0
        ee = np.diag(eps)
        f = self._loglike_rows(np.concatenate((x + ee, x - ee)))
        return (f[:n] - f[n:]) / (2 * eps)

    def hessian(self, params):
        if self.offset is not None or self.exog is None:
            return super().hessian(params)
        x = np.asarray(params)
        n = len(x)
        h = _numdiff._get_epsilon(x, 4, None, n)
        ee = np.diag(h)
        hess = np.outer(h, h)
        i, j = np.triu_indices(n)
        # (x + e_i) + e_j etc., in approx_hess3's order of additions.
        pp, pm = (x + ee[i]) + ee[j], (x + ee[i]) - ee[j]
        mp, mm = (x - ee[i]) + ee[j], (x - ee[i]) - ee[j]
        f = self._loglike_rows(np.concatenate((pp, pm, mp, mm))).reshape(4, -1)
        hess[i, j] = (f[0] - f[1] - (f[2] - f[3])) / (4.0 * hess[i, j])
        hess[j, i] = hess[i, j]
        return hess


def _fit_sm(
    codes: np.ndarray,
    X: pd.DataFrame,
    link: str,
    cov_type: str,
    groups: np.ndarray | None,
    start_params: np.ndarray | None = None,
):
    """Fit statsmodels' OrderedModel with BFGS; return (result, warnings as text)."""
    if link == "logit":
        model = _LogitOrderedModel(codes, X, distr="logit")
    else:
        model = OrderedModel(codes, X, distr=link)
    # gtol tighter than scipy's 1e-5 so cut-points agree with R to ~1e-5, not ~1e-3.
    fit_kw: dict = {"method": "bfgs", "maxiter": MAX_ITER, "disp": False, "gtol": 1e-7}
    if cov_type == "cluster":
        fit_kw["cov_type"] = "cluster"
        fit_kw["cov_kwds"] = {"groups": np.asarray(pd.factorize(groups)[0])}
    elif cov_type != "nonrobust":
        fit_kw["cov_type"] = cov_type
    if start_params is not None:
        fit_kw["start_params"] = start_params
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            res = model.fit(**fit_kw)
    msgs = [f"{w.category.__name__}: {w.message}" for w in caught]
    return res, msgs


def _separation_of_fit(res, X: pd.DataFrame, codes, levels, link) -> Separation | None:
    k = X.shape[1]
    params = np.asarray(res.params, dtype=float)
    theta = res.model.transform_threshold_params(params)[1:-1]
    eta = X.to_numpy(float) @ params[:k]
    return separation_in_fit(codes, X, theta, eta, levels, link)


def _check_fit(
    res,
    X: pd.DataFrame,
    formula: str,
    msgs: list[str],
    codes: np.ndarray,
    levels: list,
    link: str = "logit",
    on_separation: str = "raise",
) -> Separation | None:
    sep_warned = any("PerfectSeparation" in m for m in msgs)
    if sep_warned:
        raise SeparationError(
            f"formula {formula!r}: complete separation (statsmodels: "
            f"{[m for m in msgs if 'PerfectSeparation' in m][0]}). Merge sparse outcome "
            f"levels, drop or coarsen the separating covariate, or use a penalised model."
        )
    sep = _separation_of_fit(res, X, codes, levels, link)
    if sep is not None:
        msg = f"formula {formula!r}: {sep.describe()}"
        if on_separation == "raise":
            raise SeparationError(
                f"{msg}. Merge sparse outcome levels, drop or coarsen the separating "
                f"covariate, or use a penalised model."
            )
        msgs.append(f"SeparationWarning: {sep.describe()}; its OR, Wald CI and p are not valid")
    if not res.mle_retvals.get("converged", False) and res.mle_retvals.get("warnflag") == 2:
        # "Precision loss": the finite-difference score cannot get below gtol, typically
        # with covariates on a large scale. Accept only if the score is negligible anyway.
        grad = np.max(np.abs(res.model.score(res.params))) / max(res.model.nobs, 1)
        if grad < GRAD_ACCEPT:
            res.mle_retvals["converged"] = True
            msgs.append(
                f"BFGS stopped on precision loss with max |score|/n = {grad:.2g} "
                f"(< {GRAD_ACCEPT:g}); accepted as converged"
            )
    if not res.mle_retvals.get("converged", False):
        raise ConvergenceError(
            f"formula {formula!r}: BFGS did not converge (at most {MAX_ITER} iterations) "
            f"(retvals: { {k: v for k, v in res.mle_retvals.items() if k in ('converged', 'iterations', 'warnflag')} }); "
            f"rescale covariates or simplify the model"
        )
    all_se = np.asarray(res.bse, dtype=float)
    if not np.all(np.isfinite(all_se)):
        k = X.shape[1]
        names = list(X.columns) + [f"threshold {j + 1}" for j in range(len(all_se) - k)]
        bad = [n for n, s in zip(names, all_se) if not np.isfinite(s)]
        raise OrdinalFitError(
            f"formula {formula!r}: the information matrix is singular (non-finite standard "
            f"errors for {bad}); a covariate or an outcome level carries no information"
        )
    return sep


def fit_proportional_odds(
    data: pd.DataFrame,
    formula: str,
    weights: str | np.ndarray | pd.Series | None = None,
    cov_type: str = "nonrobust",
    groups: str | np.ndarray | pd.Series | None = None,
    link: str = "logit",
    levels: list | None = None,
    ci: str = "wald",
    on_separation: str = "raise",
) -> OrdinalResult:
    """Fit a proportional-odds model ``outcome ~ covariates`` (no intercept; thresholds instead).

    Parameters
    ----------
    data : DataFrame
        One row per patient (or per covariate pattern with ``weights``).
    formula : str
        Patsy formula, e.g. ``"mrs_3months ~ lesion_volume_ml + age + C(sex)"``. The
        left side names an ordered categorical or integer column; unused levels are
        dropped. Any intercept is removed from the design matrix.
    weights : str or array, optional
        Frequency weights (whole numbers; a column name or one value per row), as in
        R's ``polr(..., weights = Freq)``. Rows are expanded, so ``n`` is the sum of weights.
    cov_type : {"nonrobust", "cluster", "HC0", ...}
        Covariance of the estimates; ``"cluster"`` needs ``groups``.
    groups : str or array, optional
        Cluster labels (e.g. centre) for ``cov_type="cluster"``.
    link : {"logit", "probit"}
        Link function; odds ratios are only meaningful for ``"logit"``.
    levels : list, optional
        The outcome's levels, lowest first, for an ordinal scale other than mRS. By
        default a numeric outcome must hold mRS grades, whole numbers 0-6 (a 9 for
        "unknown" is an error naming the column and the values); an ordered categorical
        outcome carries its own levels.
    ci : {"wald", "profile"}
        ``"wald"`` (default): ``OR_low/OR_high`` = exp(beta -/+ 1.96 se). ``"profile"``:
        profile-likelihood intervals (R's ``confint`` on a ``polr`` fit, to root-finding
        precision rather than MASS's spline interpolation); logit link, ``nonrobust``
        covariance. An end that the profile never reaches is +/-inf, with a warning.
        ``p`` stays the Wald p-value either way; ``ci_method`` says which interval.
    on_separation : {"raise", "warn"}
        (Quasi-)complete separation, read from the fit (a cut every patient is fitted to
        lie firmly on their own side of) and checked exactly (a direction in which the
        likelihood rises for ever, by a linear programme): ``"raise"`` a
        :class:`SeparationError` (default), or ``"warn"``: return the fit with the
        finding in ``fit_warnings`` and ``separation``.

    Returns
    -------
    OrdinalResult

    Raises
    ------
    ValueError
        Missing column (the available ones are listed), an outcome that is not ordinal,
        outcome values outside mRS 0-6 (or ``levels``), a single outcome level, constant or
        collinear covariates.
    SeparationError, ConvergenceError
        (Subclasses of ValueError.) The fit cannot give a trustworthy number.
    """
    if link not in ("logit", "probit"):
        raise ValueError(f"link {link!r}: expected 'logit' or 'probit'")
    if cov_type == "cluster" and groups is None:
        raise ValueError("cov_type='cluster' needs groups= (a column name or one label per row)")
    if groups is not None and cov_type != "cluster":
        raise ValueError(f"groups were given but cov_type={cov_type!r}; use cov_type='cluster'")
    if ci not in ("wald", "profile"):
        raise ValueError(f"ci {ci!r}: expected 'wald' or 'profile'")
    if on_separation not in ("raise", "warn"):
        raise ValueError(f"on_separation {on_separation!r}: expected 'raise' or 'warn'")
    if ci == "profile" and (link != "logit" or cov_type != "nonrobust"):
        raise ValueError(
            f"ci='profile' needs link='logit' and cov_type='nonrobust' (got {link!r}, "
            f"{cov_type!r}): a profile likelihood assumes independent patients"
        )
    design = build_design(data, formula, weights=weights, groups=groups)
    y, X, g = _expand(design)
    y = check_outcome_levels(y, design.outcome, levels)
    codes, levels = ordinal_codes(y, design.outcome)
    _check_exog(X, formula)
    res, msgs = _fit_sm(codes, X, link, cov_type, g)
    sep = _check_fit(res, X, formula, msgs, codes, levels, link, on_separation)
    result = _result_from_sm(res, design, formula, codes, levels, X, g, link, cov_type, msgs)
    result.separation = sep
    if ci == "profile":
        prof = profile_intervals(result)
        result.coef["OR_low"] = np.exp(prof["low"].to_numpy())
        result.coef["OR_high"] = np.exp(prof["high"].to_numpy())
        result.ci_method = "profile"
        for term, r in prof.iterrows():
            if not (r["closed_low"] and r["closed_high"]):
                side = "lower" if not r["closed_low"] else "upper"
                result.fit_warnings.append(
                    f"ProfileWarning: the profile likelihood of {term} does not close on the "
                    f"{side} side within |beta| x range(x) <= max({PROFILE_MAX_LOGIT:g}, 4 x the "
                    f"estimate's) (separation?); "
                    f"that end of its interval is infinite"
                )
    return result


def _result_from_sm(res, design, formula, codes, levels, X, g, link, cov_type, msgs):
    k = X.shape[1]
    params = np.asarray(res.params, dtype=float)
    cov = np.asarray(res.cov_params(), dtype=float)
    beta, se = params[:k], np.sqrt(np.diag(cov)[:k])
    z = beta / se
    with np.errstate(over="ignore"):  # a separated fit (on_separation="warn") may overflow
        or_ = np.exp(np.column_stack([beta, beta - Z95 * se, beta + Z95 * se]))
    coef = pd.DataFrame(
        {
            "estimate": beta,
            "se": se,
            "z": z,
            "p": 2 * stats.norm.sf(np.abs(z)),
            "OR": or_[:, 0],
            "OR_low": or_[:, 1],
            "OR_high": or_[:, 2],
        },
        index=pd.Index(X.columns, name="term"),
    )
    # Natural-scale cuts theta_j = a_1 + sum_{i<=j} exp(a_i): delta method through the
    # Jacobian d theta_j / d a_i (1 for the first cut, exp(a_i) for the log-increments).
    a = params[k:]
    theta = res.model.transform_threshold_params(params)[1:-1]
    m = len(a)
    jac = np.zeros((m, m))
    jac[:, 0] = 1.0
    for j in range(m):
        jac[j, 1 : j + 1] = np.exp(a[1 : j + 1])
    th_cov = jac @ cov[k:, k:] @ jac.T
    names = [f"{levels[j]}|{levels[j + 1]}" for j in range(m)]
    thresholds = pd.DataFrame(
        {"estimate": theta, "se": np.sqrt(np.diag(th_cov))}, index=pd.Index(names, name="cut")
    )
    return OrdinalResult(
        coef=coef,
        thresholds=thresholds,
        loglik=float(res.llf),
        aic=float(-2 * res.llf + 2 * len(params)),
        n=float(len(codes)),
        converged=bool(res.mle_retvals.get("converged", False)),
        formula=formula,
        outcome=design.outcome,
        outcome_levels=list(levels),
        link=link,
        cov_type=cov_type,
        sm_result=res,
        design=design,
        codes=codes,
        exog=X,
        groups=g,
        dropped=dict(design.dropped),
        fit_warnings=msgs,
    )


def _null_loglik(codes: np.ndarray) -> float:
    """Log-likelihood of the thresholds-only model (closed form: observed proportions)."""
    counts = np.bincount(codes)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.log(counts / counts.sum())))


def lr_test_terms(result: OrdinalResult) -> pd.DataFrame:
    """Likelihood-ratio test of each formula term (all its design columns at once).

    Each term is dropped in turn and the model refitted on exactly the same rows.

    Returns
    -------
    DataFrame
        Columns ``term, chi2, df, p``; one row per term.
    """
    rows = []
    for term, cols in result.design.term_columns.items():
        rest = result.exog.drop(columns=cols)
        if rest.shape[1] == 0:
            ll0 = _null_loglik(result.codes)
        else:
            res0, msgs = _fit_sm(result.codes, rest, result.link, "nonrobust", None)
            _check_fit(res0, rest, f"{result.formula} without {term}", msgs, result.codes,
                       result.outcome_levels, result.link)  # fmt: skip
            ll0 = float(res0.llf)
        chi2 = max(2 * (result.loglik - ll0), 0.0)
        rows.append(
            {"term": term, "chi2": chi2, "df": len(cols), "p": stats.chi2.sf(chi2, len(cols))}
        )
    return pd.DataFrame(rows, columns=["term", "chi2", "df", "p"])


def _profile_loglik(codes, X, k, b, J, start):
    """Maximum log-likelihood with coefficient ``k`` fixed at ``b`` (and its arg max)."""
    xk = X[:, k]
    rest = np.delete(X, k, axis=1)
    opt = optimize.minimize(
        ppo_negloglik_grad,
        start,
        args=(codes, rest, np.zeros((len(codes), 0)), J, xk * b),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-9, "maxiter": 5000},
    )
    return -float(opt.fun), opt.x


def profile_intervals(result: OrdinalResult, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood confidence intervals of every coefficient (log-odds scale).

    An end is where twice the drop of the profile log-likelihood equals the chi-square(1)
    quantile. It is bracketed by stepping out from the estimate (in steps of the standard
    error, then in fractions of the room left up to ``|beta| x range(x) =
    max(PROFILE_MAX_LOGIT, 4 |beta_hat| x range(x))``) and then found by Brent's method; each profile point is a BFGS
    fit with the analytic gradient, started from its neighbour. An end not reached is
    +/-inf (``closed_low`` / ``closed_high`` False).

    Returns
    -------
    DataFrame
        Indexed by term: ``estimate, low, high, closed_low, closed_high``.
    """
    if result.link != "logit":
        raise ValueError("profile_intervals needs a logit-link fit")
    X = result.exog.to_numpy(float)
    codes = result.codes
    J = result.n_levels
    q = stats.chi2.ppf(level, 1)
    theta = result.thresholds["estimate"].to_numpy()
    beta = result.coef["estimate"].to_numpy()
    full = optimize.minimize(
        ppo_negloglik_grad,
        np.concatenate([theta, beta]),
        args=(codes, X, np.zeros((len(codes), 0)), J),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-9, "maxiter": 5000},
    )
    ll_hat = max(result.loglik, -float(full.fun))
    rows = {}
    for k, term in enumerate(result.coef.index):
        bhat, se = beta[k], float(result.coef["se"].iloc[k])
        xbar = X[:, k].mean()
        rng_k = np.ptp(X[:, k])
        span = max(PROFILE_MAX_LOGIT, 4 * abs(bhat) * rng_k) / rng_k
        ends, closed = [], []
        for sign in (-1.0, 1.0):
            room = (sign * span - bhat) * sign
            steps = [t * Z95 * se for t in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)]
            steps = sorted({d for d in steps if np.isfinite(d) and d < room} |
                           {room * f for f in (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0)})  # fmt: skip
            start = np.concatenate([theta, np.delete(beta, k)])
            prev_b, end, ok = bhat, sign * np.inf, False
            for d in steps if room > 0 else []:
                b = bhat + sign * d
                # Shift the cut-points with the offset so the start stays near the optimum.
                guess = start.copy()
                guess[: J - 1] += (b - prev_b) * xbar
                ll, x = _profile_loglik(codes, X, k, b, J, guess)
                if not np.isfinite(ll):
                    break
                if 2 * (ll_hat - ll) >= q:

                    def dev(bb, warm=start, b0=prev_b, k=k, xbar=xbar):
                        g = warm.copy()
                        g[: J - 1] += (bb - b0) * xbar
                        return 2 * (ll_hat - _profile_loglik(codes, X, k, bb, J, g)[0]) - q

                    end = optimize.brentq(dev, prev_b, b, xtol=1e-9, rtol=1e-12)
                    ok = True
                    break
                prev_b, start = b, x
            ends.append(end)
            closed.append(ok)
        rows[term] = {
            "estimate": bhat,
            "low": ends[0],
            "high": ends[1],
            "closed_low": closed[0],
            "closed_high": closed[1],
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("term")
