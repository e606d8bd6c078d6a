"""Ordinal statistics for stroke outcome: proportional-odds fits, PO tests, multiplicity.

Sign convention throughout: ``logit P(Y <= j) = theta_j - x'beta``, so OR = exp(beta) > 1
means a higher (worse) outcome level such as mRS; ``exp(-beta)`` is the OR for a better one.
"""

from .ordinal import (
    ConvergenceError,
    OrdinalFitError,
    OrdinalResult,
    SeparationError,
    fit_proportional_odds,
    lr_test_terms,
)
from .po_tests import PartialPOResult, brant_test, nominal_test, partial_po_fit, per_cut_logistic

__all__ = [
    "ConvergenceError",
    "OrdinalFitError",
    "OrdinalResult",
    "PartialPOResult",
    "SeparationError",
    "brant_test",
    "fit_proportional_odds",
    "lr_test_terms",
    "nominal_test",
    "partial_po_fit",
    "per_cut_logistic",
]
