"""The registered hypotheses, tested on every map source of the analysis table."""

from __future__ import annotations

import warnings

import pandas as pd

from hypo.stats.registry import NOT_APPLICABLE, test_hypotheses

from .config import OUTCOME
from .table import alias, cam_method


def _not_applicable(data: pd.DataFrame, column: str, source: str, feature: str) -> str:
    """Why a test cannot be defined on a control map source ('' when it can)."""
    x = pd.to_numeric(data[column], errors="coerce").dropna()
    if not len(x) and source != "cam":
        return (
            f"{NOT_APPLICABLE}: no {source} map of the analysed patients has mass in the "
            "brain (all maps zero), so the feature is undefined"
        )
    if len(x) and x.nunique() == 1:
        return (
            f"{NOT_APPLICABLE}: {feature} is {x.iloc[0]:g} for every patient on {source} "
            "maps (a uniform map has density ratio 1 by construction)"
        )
    return ""


def run_hypotheses(data: pd.DataFrame, reg, lock, methods, sources) -> pd.DataFrame:
    """Every registered test on every map source (q within family, per source/analysis).

    Parameters
    ----------
    data : DataFrame
        The analysed patients of the analysis table (:func:`hypo.study.table.build_table`).
    reg, lock
        The verified registry and its lock file.
    methods : sequence of str
        CAM methods computed (a hypothesis whose method is missing uses the first).
    sources : sequence of str
        Map sources: ``"cam"`` and the negative controls.
    """
    parts = []
    for src in sources:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failures are kept in the rows' error column
            res = test_hypotheses(
                data,
                reg,
                lock,
                outcome_col=OUTCOME,
                sensitivity=src == "cam",
                column_for=lambda h, src=src: alias(h, src),
                ids=set(reg.hypotheses),
            )
        res.insert(3, "map_source", src)
        parts.append(res)
    out = pd.concat(parts, ignore_index=True)
    hyp = reg.hypotheses
    for i, r in out.iterrows():
        why = _not_applicable(data, r["feature"], r["map_source"], hyp[r["hypothesis"]].feature)
        if why:
            out.loc[i, "error"] = why
    out["column"] = out["feature"]
    out["feature"] = [hyp[i].feature for i in out["hypothesis"]]
    out["cam_class"] = [hyp[i].cam_class for i in out["hypothesis"]]
    out["method"] = [
        cam_method(hyp[i], methods)
        if s == "cam"
        else ("gradcam" if s == "control_random_model" else "control")
        for i, s in zip(out["hypothesis"], out["map_source"])
    ]
    out["aggregation"] = [hyp[i].aggregation for i in out["hypothesis"]]
    return out
