"""Ordinal statistics for stroke outcome: proportional-odds fits, PO tests, multiplicity.

Sign convention throughout: ``logit P(Y <= j) = theta_j - x'beta``, so OR = exp(beta) > 1
means a higher (worse) outcome level such as mRS; ``exp(-beta)`` is the OR for a better one.
"""

from .bootstrap import bootstrap_ci, bootstrap_proportional_odds
from .discrimination import (
    calibration_table,
    cross_validated_predictions,
    cv_discrimination,
    harrell_c,
    ordinal_c_index,
    stratified_folds,
)
from .effects import generalized_odds_ratio, utility_mean_difference, utility_weighted_mrs
from .missing import complete_case, mice_proportional_odds, rubin_pool
from .multiplicity import add_qvalues, bh_qvalues
from .ordinal import (
    ConvergenceError,
    OrdinalFitError,
    OrdinalResult,
    SeparationError,
    fit_proportional_odds,
    lr_test_terms,
    profile_intervals,
)
from .outcomes import CODINGS, code_outcome, fit_outcome
from .po_analysis import POAnalysis, po_analysis
from .po_tests import (
    PartialPOResult,
    brant_test,
    nominal_test,
    partial_po_fit,
    partial_po_table,
    per_cut_logistic,
)
from .registry import (
    Hypothesis,
    Registry,
    RegistryLockError,
    lock,
    run_family,
    test_hypotheses,
    verify_lock,
)
from .secondary import compare_outcome_groups, partial_spearman
from .separation import Separation, find_separation

__all__ = [
    "CODINGS",
    "ConvergenceError",
    "Hypothesis",
    "OrdinalFitError",
    "OrdinalResult",
    "POAnalysis",
    "PartialPOResult",
    "Registry",
    "RegistryLockError",
    "Separation",
    "SeparationError",
    "add_qvalues",
    "bh_qvalues",
    "bootstrap_ci",
    "bootstrap_proportional_odds",
    "brant_test",
    "calibration_table",
    "code_outcome",
    "compare_outcome_groups",
    "complete_case",
    "cross_validated_predictions",
    "cv_discrimination",
    "fit_outcome",
    "find_separation",
    "fit_proportional_odds",
    "generalized_odds_ratio",
    "harrell_c",
    "lock",
    "lr_test_terms",
    "mice_proportional_odds",
    "nominal_test",
    "ordinal_c_index",
    "partial_po_fit",
    "partial_po_table",
    "partial_spearman",
    "per_cut_logistic",
    "po_analysis",
    "profile_intervals",
    "rubin_pool",
    "run_family",
    "stratified_folds",
    "test_hypotheses",
    "utility_mean_difference",
    "utility_weighted_mrs",
    "verify_lock",
]
