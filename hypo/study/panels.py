"""CAM panels of the main study: a few lesion slices of the analysed patients with both
models' raw maps, on one colour scale per method for the cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hypo.cam.stream import CamStore
from hypo.cohort.orientation import axial_slices
from hypo.preprocess import SliceStore
from hypo.report.cam_panels import CamExample

from .config import OUTCOME, PANEL_CLASSES

#: Models shown in the panels (the outcome model's bag CAMs are not).
MODEL_KEYS = tuple(PANEL_CLASSES)


def lesion_score(t: pd.DataFrame) -> np.ndarray:
    """Lesion area (mm^2) of each slice, or the reader's label where no mask gives one."""
    if not len(t):
        return np.zeros(0)
    area = pd.to_numeric(
        t.get("lesion_area_mm2", pd.Series(np.nan, index=t.index)), errors="coerce"
    )
    vis = pd.to_numeric(t.get("lesion_visible", pd.Series(0, index=t.index)), errors="coerce")
    return area.fillna(0).to_numpy(float) + 1e-6 * vis.fillna(0).to_numpy(float)


def pick_patients(data: pd.DataFrame, n: int) -> list[str]:
    """Alternately the largest lesion with mRS 3-6 and with mRS 0-2, then the next ones."""
    mrs = pd.to_numeric(data[OUTCOME], errors="coerce")
    vol = pd.to_numeric(data["lesion_volume_ml"], errors="coerce").fillna(0)
    order = dict(by=["v", "participant_id"], ascending=[False, True])
    poor = data[mrs >= 3].assign(v=vol).sort_values(**order)
    good = data[mrs <= 2].assign(v=vol).sort_values(**order)
    picks = []
    for src in (poor, good, poor.iloc[1:], good.iloc[1:]):
        for pid in src["participant_id"]:
            if pid not in picks:
                picks.append(pid)
                break
        if len(picks) >= n:
            break
    return picks


def _example(cohort, pid, data, stores, cams, cards) -> CamExample:
    st = stores["stroke"]
    rows = st.patient_rows(pid)
    i = int(rows[int(np.argmax(lesion_score(st.table.iloc[rows])))])
    sl = int(st.table["slice"].iloc[i])
    maps, probs = {}, {}
    for k in MODEL_KEYS:
        t = stores[k].table
        j = int(
            np.flatnonzero((t["participant_id"].to_numpy() == pid) & (t["slice"].to_numpy() == sl))[
                0
            ]
        )
        res = cams[k].result([j])
        classes = [str(c) for c in cards[k]["classes"]]
        for cname in PANEL_CLASSES[k]:
            c = classes.index(cname)
            ci = list(res.classes).index(c)
            label = f"{k}: {cname}"
            probs[label] = float(res.probabilities[0, c])
            for m in res.methods:
                maps[m, label] = np.asarray(res[m][0, ci], float)
    mask = st.masks.get("lesion")
    return CamExample(
        participant_id=str(pid),
        image_native=np.asarray(axial_slices(cohort.dwi(pid).data)[sl], float),
        image_preprocessed=np.asarray(st.images[i], float),
        maps=maps,
        probabilities=probs,
        slice_index=sl,
        mrs_3months=float(pd.to_numeric(data.set_index("participant_id").loc[pid, OUTCOME])),
        lesion_mask=None if mask is None else np.asarray(mask[i]),
    )


def _cohort_scale(data, stores, cams, cards, methods) -> dict:
    """One colour scale per method for the cohort: the 99th percentile of the method's raw
    maps of the panel classes over every lesion slice of the analysed patients (a maximum
    of the examples alone would rescale with the choice of examples)."""
    vals = {m: [] for m in methods}
    analysed = set(data["participant_id"].astype(str))
    for k in MODEL_KEYS:
        t = stores[k].table
        rows = np.flatnonzero(
            t["participant_id"].astype(str).isin(analysed).to_numpy() & (lesion_score(t) > 0)
        )
        classes_k = [str(c) for c in cards[k]["classes"]]
        cidx = [list(cams[k].classes).index(classes_k.index(c)) for c in PANEL_CLASSES[k]]
        for m in methods:
            vals[m].append(np.asarray(cams[k].maps(m, rows, resized=False))[:, cidx].ravel())
    vmax = {}
    for m in methods:
        allv = np.concatenate(vals[m]) if vals[m] else np.zeros(0)
        v = float(np.percentile(allv, 99)) if allv.size else 0.0
        vmax[m] = v if v > 0 else None  # None: the range of the maps shown
    return vmax


def cam_examples(cohort, data: pd.DataFrame, feats: dict, cards: dict, methods, n_panels: int):
    """``(examples, panel keyword arguments)`` for :func:`hypo.report.cam_panels`.

    ``data`` is the analysed patients; ``feats`` each model's
    :class:`hypo.features.pipeline.FeatureRun` (its slice store and CAM cache).
    """
    if data.empty:
        return [], {}
    stores = {k: SliceStore.open(feats[k].store) for k in MODEL_KEYS}
    cams = {k: CamStore.open(feats[k].cam_dirs[0]) for k in MODEL_KEYS}
    picks = pick_patients(data, n_panels)
    examples = [_example(cohort, pid, data, stores, cams, cards) for pid in picks]
    classes = [f"{k}: {c}" for k in MODEL_KEYS for c in PANEL_CLASSES[k]]
    shown = [m for m in ("gradcam", "gradcampp") if m in methods]
    vmax = _cohort_scale(data, stores, cams, cards, shown)
    kw = {"classes": classes, "methods": shown, "scale": "raw", "vmin": 0.0, "vmax": vmax}
    return examples, kw
