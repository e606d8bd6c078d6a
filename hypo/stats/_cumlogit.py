"""The cumulative-logit log-likelihood with cut-specific effects, shared by the partial
proportional-odds fit and the profile-likelihood intervals.

Model: ``logit P(Y <= j) = a_j - x'b - z'g_j - offset`` with natural-scale cut-points
``a_1 < ... < a_{J-1}``; parameters are ``[a, b, g_1, ..., g_{J-1}]``.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["ppo_negloglik_grad"]


def ppo_negloglik_grad(params, codes, X, Z, J, offset=None):
    """Negative log-likelihood and its analytic gradient (``inf`` where cuts cross)."""
    n, k = X.shape
    q = Z.shape[1]
    a = params[: J - 1]
    b = params[J - 1 : J - 1 + k]
    g = params[J - 1 + k :].reshape(J - 1, q) if q else np.zeros((J - 1, 0))
    eta = a[None, :] - (X @ b)[:, None] - Z @ g.T  # n x (J-1)
    if offset is not None:
        eta = eta - offset[:, None]
    F = special.expit(eta)
    Fpad = np.hstack([np.zeros((n, 1)), F, np.ones((n, 1))])
    idx = np.arange(n)
    p = Fpad[idx, codes + 1] - Fpad[idx, codes]
    if np.any(p <= 0):
        # Cut-specific effects crossed: the model gives a negative probability here.
        return np.inf, np.zeros_like(params)
    f = F * (1 - F)
    G = np.zeros((n, J - 1))  # d log p_i / d eta_ij
    up = codes < J - 1
    G[idx[up], codes[up]] = f[idx[up], codes[up]] / p[up]
    lo = codes > 0
    G[idx[lo], codes[lo] - 1] = -f[idx[lo], codes[lo] - 1] / p[lo]
    grad = np.concatenate([G.sum(0), -(X.T @ G.sum(1)), -(G.T @ Z).reshape(-1)])
    return -float(np.sum(np.log(p))), -grad
