"""The secondary battery of the main study, one function per question.

Per registered hypothesis (the primary CAM feature, standardised): a patient bootstrap of
the OR, proportional-odds checks, a partial Spearman correlation, cross-validated
discrimination and (only where covariates are missing) MICE; per family, mRS 0-2 vs 3-6.
Every function returns one row per hypothesis and keeps a failure in its ``error`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hypo.stats import (
    bootstrap_proportional_odds,
    brant_test,
    compare_outcome_groups,
    cv_discrimination,
    fit_proportional_odds,
    mice_proportional_odds,
    nominal_test,
    partial_po_table,
    partial_spearman,
)
from hypo.stats.multiplicity import bh_qvalues

from .config import OUTCOME
from .table import alias

IDENT_COLUMNS = ["hypothesis", "family", "model", "feature"]
#: Columns of each secondary table after the identifiers (an ``error`` column closes each).
COLUMNS = {
    "bootstrap": ["OR", "OR_low", "OR_high", "boot_se", "n_ok", "n_failed"],
    "po_checks": ["brant_omnibus_p", "brant_feature_p", "nominal_feature_p"],
    "spearman": ["n", "r", "r_low", "r_high", "p"],
    "discrimination": [
        "outcome",
        "metric",
        "covariates_only_cv",
        "with_feature_cv",
        "difference",
        "n",
        "n_splits",
    ],  # fmt: skip
    "mice": ["OR", "OR_low", "OR_high", "p", "n", "n_imputed"],
}
CAPTIONS = {
    "bootstrap": "Patient bootstrap (percentile) 95% CIs of the primary per-SD ORs",
    "po_checks": "Proportional-odds checks per primary fit (Brant omnibus/feature, nominal LR)",
    "spearman": "Spearman partial correlation of each feature with mRS, adjusted for the "
    "primary covariates (q: BH within family)",
    "discrimination": "Cross-validated C-indices: covariates only vs covariates + feature",
    "mice": "MICE sensitivity (Rubin-pooled OR per SD)",
    "outcome_groups": "mRS 0-2 vs 3-6 (Mann-Whitney U, BH within family)",
    "partial_po": "Partial proportional odds (secondary, not primary): per-cut ORs (OR > 1 = "
    "worse mRS above that cut) of every term whose Brant or nominal test has p < 0.05, with the "
    "LR test against proportional odds; a 'not estimable' row says why",
}


def primary_frame(data: pd.DataFrame, h, col: str) -> tuple[pd.DataFrame, str]:
    """Complete-case frame with the standardised feature ``z``, and the primary formula."""
    covs = list(h.covariates)
    d = data[[OUTCOME, col, *covs]].apply(pd.to_numeric, errors="coerce").dropna()
    x = d[col]
    d = d.assign(z=(x - x.mean()) / x.std(ddof=1))
    return d, f"{OUTCOME} ~ " + " + ".join(["z", *covs])


def _error(e: Exception) -> dict:
    return {"error": f"{type(e).__name__}: {e}"}


def bootstrap_row(d: pd.DataFrame, formula: str, n_boot: int, seed: int) -> dict:
    """Percentile CI of the per-SD OR by resampling patients."""
    try:
        r = bootstrap_proportional_odds(d, formula, n_resamples=n_boot, seed=seed).loc["z"]
    except ValueError as e:
        return _error(e)
    return {
        "OR": r["OR"],
        "OR_low": r["OR_low"],
        "OR_high": r["OR_high"],
        "boot_se": r["boot_se"],
        "n_ok": int(r["n_ok"]),
        "n_failed": int(r["n_failed"]),
        "error": "",
    }


def po_check_row(d: pd.DataFrame, formula: str) -> tuple[dict, pd.DataFrame | None]:
    """Brant (omnibus and feature) and the LR nominal test of proportional odds; and the
    partial-PO table of every term that fails them (None when the fit failed)."""
    try:
        fit = fit_proportional_odds(d, formula)
        bt = brant_test(fit).set_index("term")
        nt = nominal_test(fit).set_index("term")
    except (ValueError, np.linalg.LinAlgError) as e:
        return _error(e), None
    row = {
        "brant_omnibus_p": bt.loc["omnibus", "p"],
        "brant_feature_p": bt.loc["z", "p"] if "z" in bt.index else np.nan,
        "nominal_feature_p": nt.loc["z", "p"] if "z" in nt.index else np.nan,
        "error": "",
    }
    return row, partial_po_table(fit)


def spearman_row(d: pd.DataFrame, covariates) -> dict:
    """Spearman partial correlation with mRS, adjusted for the primary covariates."""
    try:
        s = partial_spearman(d, "z", OUTCOME, list(covariates)).iloc[0].to_dict()
    except (ValueError, ZeroDivisionError, AssertionError) as e:
        return _error(e)
    return {"n": s["n"], "r": s["r"], "r_low": s["ci_low"], "r_high": s["ci_high"], "p": s["p"]}


def discrimination_rows(d: pd.DataFrame, h, formula: str, n_splits: int, seed: int) -> list:
    """Cross-validated C-indices without and with the feature, on the same folds.

    Stratified folds need every mRS grade twice; where a grade is rarer, grades are merged
    from the top (6 into 5, then 5 into 4, ...) and the ``outcome`` column says so.
    """
    y = d[OUTCOME].astype(int)
    top = 6
    while top > 1 and (y.clip(upper=top).value_counts() < 2).any():
        top -= 1
    dd = d.assign(**{OUTCOME: y.clip(upper=top)})
    outcome = "mRS 0-6" if top == 6 else f"mRS 0-{top} ({top}-6 merged)"
    try:
        base = cv_discrimination(dd, f"{OUTCOME} ~ {' + '.join(h.covariates)}", n_splits, seed)
        full = cv_discrimination(dd, formula, n_splits, seed)
    except ValueError as e:
        return [_error(e)]
    return [
        {
            "outcome": outcome,
            "metric": rb["metric"],
            "covariates_only_cv": rb["cross_validated"],
            "with_feature_cv": rf["cross_validated"],
            "difference": rf["cross_validated"] - rb["cross_validated"],
            "n": int(rb["n"]),
            "n_splits": n_splits,
            "error": "",
        }
        for (_, rb), (_, rf) in zip(base.iterrows(), full.iterrows())
    ]


def mice_row(data: pd.DataFrame, h, col: str, formula: str, m: int, seed: int) -> dict | None:
    """Rubin-pooled per-SD OR, only where a covariate (not the outcome) is missing."""
    covs = list(h.covariates)
    if not data[covs].apply(pd.to_numeric, errors="coerce").isna().any().any():
        return None
    f = data[[OUTCOME, col, *covs]].apply(pd.to_numeric, errors="coerce")
    f = f[f[OUTCOME].notna() & f[col].notna()]
    f = f.assign(z=(f[col] - f[col].mean()) / f[col].std(ddof=1))
    try:
        r = mice_proportional_odds(f, formula, m=m, seed=seed).loc["z"]
    except ValueError as e:
        return _error(e)
    out = {k: r[k] for k in ("OR", "OR_low", "OR_high", "p")}
    return {**out, "n": int(r["n"]), "n_imputed": int(r["n_imputed"]), "error": ""}


def _frame(rows: list[dict], cols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in IDENT_COLUMNS + cols + ["error"]:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object if c == "error" else float)
    df["error"] = df["error"].fillna("")
    return df[IDENT_COLUMNS + cols + ["error"]]


def outcome_group_table(data: pd.DataFrame, reg) -> pd.DataFrame:
    """mRS 0-2 vs 3-6 per primary feature (Mann-Whitney U, BH within the family)."""
    groups = []
    for fam in reg.families:
        fh = reg.family(fam)
        try:
            g = compare_outcome_groups(data, [alias(h, "cam") for h in fh], OUTCOME)
            g.insert(0, "hypothesis", [h.id for h in fh])
            g.insert(1, "family", fam)
            groups.append(g)
        except ValueError as e:
            groups.append(pd.DataFrame([{"family": fam, **_error(e)}]))
    return pd.concat(groups, ignore_index=True) if groups else pd.DataFrame()


def _hypothesis_rows(data: pd.DataFrame, h, n_boot: int, seed: int, cv_splits: int, mice_m: int):
    """One hypothesis's rows of each secondary table, and its partial-PO table or None."""
    col = alias(h, "cam")
    d, formula = primary_frame(data, h, col)
    ident = {"hypothesis": h.id, "family": h.family, "model": h.model, "feature": h.feature}
    rows = {name: [] for name in COLUMNS}
    rows["bootstrap"].append({**ident, **bootstrap_row(d, formula, n_boot, seed)})
    po_row, partial = po_check_row(d, formula)
    rows["po_checks"].append({**ident, **po_row})
    part = partial.assign(**ident) if partial is not None and len(partial) else None
    rows["spearman"].append({**ident, **spearman_row(d, h.covariates)})
    disc = discrimination_rows(d, h, formula, cv_splits, seed)
    rows["discrimination"] += [{**ident, **r} for r in disc]
    mice = mice_row(data, h, col, formula, mice_m, seed)
    if mice is not None:
        rows["mice"].append({**ident, **mice})
    return rows, part


def _hypothesis_rows_star(args):
    return _hypothesis_rows(*args)


def secondary_workers(n_tasks: int, workers: int | None = None) -> int:
    """Processes for the battery: ``workers``, else :func:`hypo._util.env_workers`
    (``HYPO_WORKERS`` or the machine's cores); at most the tasks. ``HYPO_WORKERS=1`` on a
    machine busy with other jobs, where a second process gains nothing."""
    from hypo._util import pool_workers

    return pool_workers(n_tasks, workers)


def secondary_analyses(data: pd.DataFrame, reg, config, workers: int | None = None) -> dict:
    """The whole battery: ``{name: table}`` for the names of :data:`CAPTIONS`.

    ``config`` supplies ``n_boot``, ``seed``, ``cv_splits``, ``mice_m`` and ``progress``
    (a :class:`hypo.study.config.StudyConfig`). Hypotheses are independent (each draws
    from ``config.seed`` alone), so with ``workers`` > 1 (default
    :func:`secondary_workers`: ``HYPO_WORKERS`` or the machine's cores) they run in worker
    processes and are collected in hypothesis order: the tables are the same as in one
    process.
    """
    rows = {name: [] for name in COLUMNS}
    partial_po = []
    hyps = sorted(reg.hypotheses.values(), key=lambda h: h.id)
    args = [(data, h, config.n_boot, config.seed, config.cv_splits, config.mice_m) for h in hyps]
    bar = tqdm(total=len(hyps), desc="secondary analyses", disable=not config.progress,
               unit="hypothesis")  # fmt: skip
    # A quick run's battery takes less than a worker's start.
    n_workers = secondary_workers(len(hyps), 1 if getattr(config, "quick", False) else workers)
    from hypo._util import pool_map

    # The run's shared spawned workers (the caller holds TensorFlow's thread pools).
    results = pool_map(_hypothesis_rows_star, args, n_workers)
    for hyp_rows, part in results:
        for name, r in hyp_rows.items():
            rows[name] += r
        if part is not None:
            partial_po.append(part)  # terms failing PO, cut by cut
        bar.update(1)
    bar.close()
    out = {name: _frame(rows[name], cols) for name, cols in COLUMNS.items()}
    sp = out["spearman"]
    if len(sp):
        sp["q"] = np.nan
        for _, idx in sp.groupby("family").groups.items():
            sp.loc[idx, "q"] = bh_qvalues(sp.loc[idx, "p"].to_numpy(float))
    out["outcome_groups"] = outcome_group_table(data, reg)
    out["partial_po"] = pd.concat(partial_po, ignore_index=True) if partial_po else pd.DataFrame()
    return out
