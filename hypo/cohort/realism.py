"""Realism check of a (synthetic) stroke DWI cohort: ``python -m hypo.cohort realism DIR``.

Measures image contrast, lesion volumes, slice counts, the share of lesion slices and the
clinical distributions, and compares each with a published target range. A quantity is
``OK`` when the 95 % confidence interval of the measured value overlaps the target range,
so that a tiny cohort is judged by what its sample size can show (a large cohort's
interval is narrow and the check becomes a point check). Exit status 1 if any ``FAIL``.

Intensity ratios are measured on the stored DWI with the truth masks: grey matter = upper
quartile within the cortical ribbon mask (the voxels least diluted by sulcal CSF), white matter = brain deeper than 15 mm from its edge outside
ventricles and lesion (median), CSF = ventricle core, eroded in-plane (median), normal tissue = brain minus ventricles minus
lesion. Partial volume at 3-6 mm slices pulls the measured ratios toward 1 a little.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy import stats

from ..intervals import wilson_ci
from . import layout
from .orientation import to_canonical

#: quantity -> (target low, target high, citation)
TARGETS = {
    "gm_wm_ratio": (
        1.05,
        1.40,
        "b=1000 trace DWI: cortex mildly hyperintense to white matter "
        "(Schaefer, Grant & Gonzalez 2000, Radiology 217:331)",
    ),
    "csf_wm_ratio": (
        0.10,
        0.45,
        "b=1000 DWI: CSF dark, strongly attenuated by diffusion weighting (Schaefer et al. 2000)",
    ),
    "lesion_tissue_ratio": (
        1.4,
        3.2,
        "acute infarct hyperintense on DWI, relative signal ~1.5-3 "
        "(Lansberg et al. 2001, AJNR 22:637)",
    ),
    "lesion_volume_q05_ml": (
        0.1,
        2.0,
        "acute DWI lesion volumes in mixed stroke cohorts span <1 mL lacunes "
        "(ISLES 2022, Hernandez Petzsche et al. 2022, Sci Data 9:762)",
    ),
    "lesion_volume_median_ml": (
        4.0,
        25.0,
        "median acute DWI volume ~5-20 mL in unselected stroke cohorts (ISLES 2022)",
    ),
    "lesion_volume_q95_ml": (
        50.0,
        300.0,
        "large territorial MCA infarcts reach >100 mL (ISLES 2022; Woo et al. 1999, Stroke 30:2355)",
    ),
    "slices_per_patient_min": (
        21,
        46,
        "paper: 21-46 axial slices per patient (Herzog et al. 2020)",
    ),
    "slices_per_patient_max": (
        21,
        46,
        "paper: 21-46 axial slices per patient (Herzog et al. 2020)",
    ),
    "lesion_slice_share_stroke": (
        0.15,
        0.45,
        "paper: ~30 % of stroke patients' slices show a lesion",
    ),
    "tia_lesion_slice_share": (0.0, 0.0, "paper: no TIA slice labelled as lesion"),
    "mrs_0_2_share_stroke": (
        0.50,
        0.75,
        "90-day functional independence in unselected stroke registries ~50-70 %; paper Fig. 4 "
        "zero-inflated",
    ),
    "mrs_missing_share": (0.02, 0.12, "paper: 29/511 without 3-month mRS"),
    "age_median": (65.0, 77.0, "paper: median age 71, left-skewed"),
    "female_share": (0.45, 0.70, "paper: 309 female / 188 male"),
    "stroke_share": (0.60, 0.78, "paper: 355 stroke / 156 TIA"),
}

_Z = 1.959963984540054


def _quantile_ci(x: np.ndarray, q: float) -> tuple[float, float, float]:
    """Sample quantile with a distribution-free 95 % CI from binomial order statistics."""
    x = np.sort(np.asarray(x, float))
    n = x.size
    if n == 0:
        return (float("nan"),) * 3
    est = float(np.quantile(x, q))
    lo = int(stats.binom.ppf(0.025, n, q))
    hi = int(stats.binom.ppf(0.975, n, q)) + 1
    lo_v = x[max(lo - 1, 0)] if lo >= 1 else -np.inf
    hi_v = x[hi - 1] if hi <= n else np.inf
    return est, float(lo_v), float(hi_v)


def _load(root: Path, pid: str, label: str | None) -> tuple[np.ndarray, np.ndarray]:
    path = layout.dwi_path(root, pid) if label is None else layout.truth_mask_path(root, pid, label)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing ({'DWI' if label is None else label + ' mask'})")
    data, _, zooms = to_canonical(nib.load(path))
    return np.asarray(data), zooms


def image_measures(root: str | Path, pid: str) -> dict:
    """Per-patient intensity ratios and slice counts from the DWI and truth masks."""
    root = Path(root)
    dwi, zooms = _load(root, pid, None)
    dwi = dwi.astype(np.float32)
    brain = _load(root, pid, "brain")[0] > 0
    vent = _load(root, pid, "ventricles")[0] > 0
    cortex = _load(root, pid, "cortex")[0] > 0
    lesion = _load(root, pid, "lesion")[0] > 0
    if dwi.shape != brain.shape:
        raise ValueError(f"{pid}: DWI grid {dwi.shape} differs from its brain mask {brain.shape}")
    depth = ndi.distance_transform_edt(brain, sampling=zooms)
    near_lesion = ndi.binary_dilation(lesion, iterations=2) if lesion.any() else lesion
    wm = brain & (depth > 15) & ~ndi.binary_dilation(vent, iterations=2) & ~near_lesion
    gm = cortex & ~near_lesion
    normal = brain & ~vent & ~near_lesion
    out = {"participant_id": pid, "n_slices": int(dwi.shape[2])}
    wm_med = float(np.median(dwi[wm])) if wm.any() else np.nan
    # Upper quartile of the ribbon: the voxels least diluted by sulcal CSF at 3-6 mm slices.
    out["gm_wm_ratio"] = float(np.percentile(dwi[gm], 75)) / wm_med if gm.any() else np.nan
    # Ventricle core (eroded in-plane): the rim of a 3-6 mm slice is half tissue.
    core = ndi.binary_erosion(vent, structure=np.ones((3, 3, 1), bool))
    csf = core if core.sum() >= 20 else vent
    out["csf_wm_ratio"] = float(np.median(dwi[csf])) / wm_med if csf.sum() > 20 else np.nan
    out["lesion_tissue_ratio"] = (
        float(np.mean(dwi[lesion])) / float(np.median(dwi[normal])) if lesion.sum() >= 5 else np.nan
    )
    return out


def realism_report(root: str | Path, max_image_patients: int | None = 60) -> pd.DataFrame:
    """Measure the cohort at ``root`` and compare with the published ranges.

    Parameters
    ----------
    root : path
        Cohort folder in the :mod:`hypo.cohort.layout` layout.
    max_image_patients : int or None
        Intensity ratios are read from at most this many patients (evenly spaced, so the
        check stays fast on large cohorts); None reads all.

    Returns
    -------
    DataFrame
        One row per quantity: ``quantity``, ``value``, ``ci_low``, ``ci_high``, ``n``,
        ``target_low``, ``target_high``, ``citation``, ``status`` (``OK``/``FAIL``).
    """
    root = Path(root)
    ppath = root / layout.PARTICIPANTS
    if not ppath.exists():
        raise FileNotFoundError(f"{ppath}: no participants.tsv; is {root} a cohort folder?")
    part = pd.read_csv(ppath, sep="\t", na_values="n/a", dtype={"participant_id": str})
    for col in ("participant_id", "group", "age", "sex", "mrs_3months"):
        if col not in part.columns:
            raise ValueError(f"{ppath}: column {col!r} missing")
    if not (root / layout.TRUTH_DIR).is_dir():
        raise FileNotFoundError(
            f"{root / layout.TRUTH_DIR}: missing; the realism report measures a synthetic "
            "cohort against published ranges and reads its generator's truth (tissue masks), "
            "which a cohort of real scans does not have"
        )
    slices = pd.read_csv(root / layout.SLICE_LABELS, sep="\t")
    rows = {
        **_image_rows(root, list(part["participant_id"]), max_image_patients),
        **_volume_rows(root, part),
        **_slice_rows(slices, part),
        **_clinical_rows(part),
    }
    return pd.DataFrame([_compared(q, *r) for q, r in rows.items()])


def _image_rows(root: Path, pids: list, max_image_patients: int | None) -> dict:
    """Median intensity ratios over (at most ``max_image_patients``, evenly spaced) patients."""
    if max_image_patients is not None and len(pids) > max_image_patients:
        pick = np.linspace(0, len(pids) - 1, max_image_patients).round().astype(int)
        pids = [pids[i] for i in pick]
    img = pd.DataFrame([image_measures(root, pid) for pid in pids])
    rows = {}
    for q in ("gm_wm_ratio", "csf_wm_ratio", "lesion_tissue_ratio"):
        v = img[q].dropna().to_numpy()
        rows[q] = (*_quantile_ci(v, 0.5), v.size)
    return rows


def _volume_rows(root: Path, part: pd.DataFrame) -> dict:
    """Lesion volume quantiles of the stroke patients, from the generator's truth."""
    truth_path = root / layout.TRUTH_TABLE
    if truth_path.exists():
        truth = pd.read_csv(truth_path, sep="\t", na_values="n/a")
        merged = truth.merge(part[["participant_id", "group"]], on="participant_id")
        vols = merged.loc[(merged["group"] == "stroke") & (merged["true_lesion"] == 1)]
        v = vols["lesion_volume_ml"].to_numpy(float)
    else:
        # A real cohort: volumes from the manual masks are not read here.
        v = np.array([])
    return {
        f"lesion_volume_{name}_ml": (*_quantile_ci(v, q), v.size)
        for name, q in (("q05", 0.05), ("median", 0.5), ("q95", 0.95))
    }


def _slice_rows(slices: pd.DataFrame, part: pd.DataFrame) -> dict:
    """Slices per patient and the share of lesion slices (stroke and TIA)."""
    per_pat = slices.groupby("participant_id").agg(
        n=("slice", "size"), lesion=("lesion_visible", "sum")
    )
    n_sl = per_pat["n"].to_numpy()
    rows = {
        "slices_per_patient_min": (*[float(n_sl.min())] * 3, n_sl.size),
        "slices_per_patient_max": (*[float(n_sl.max())] * 3, n_sl.size),
    }
    grp = part.set_index("participant_id")["group"]
    sp = per_pat.loc[[p for p in per_pat.index if grp.get(p) == "stroke"]]
    share = float(sp["lesion"].sum() / max(sp["n"].sum(), 1))
    # Slices cluster within patients: use the patient count as the effective sample size.
    lo, hi = wilson_ci(share * len(sp), len(sp))
    rows["lesion_slice_share_stroke"] = (share, lo, hi, len(sp))
    tp = per_pat.loc[[p for p in per_pat.index if grp.get(p) == "TIA"]]
    t_share = float(tp["lesion"].sum() / max(tp["n"].sum(), 1)) if len(tp) else 0.0
    rows["tia_lesion_slice_share"] = (t_share, t_share, t_share, len(tp))
    return rows


def _clinical_rows(part: pd.DataFrame) -> dict:
    """Outcome, missingness, age, sex and group shares."""
    rows = {}
    stroke = part[part["group"] == "stroke"]
    mrs = stroke["mrs_3months"].dropna()
    k = float((mrs <= 2).sum())
    rows["mrs_0_2_share_stroke"] = (k / max(len(mrs), 1), *wilson_ci(k, len(mrs)), len(mrs))
    miss = float(part["mrs_3months"].isna().sum())
    rows["mrs_missing_share"] = (miss / len(part), *wilson_ci(miss, len(part)), len(part))
    rows["age_median"] = (*_quantile_ci(part["age"].dropna().to_numpy(float), 0.5), len(part))
    fem = float((part["sex"] == "F").sum())
    n_sex = int(part["sex"].isin(["F", "M"]).sum())
    rows["female_share"] = (fem / max(n_sex, 1), *wilson_ci(fem, n_sex), n_sex)
    ns = float((part["group"] == "stroke").sum())
    rows["stroke_share"] = (ns / len(part), *wilson_ci(ns, len(part)), len(part))
    return rows


def _compared(q: str, val, lo, hi, n) -> dict:
    """One quantity against its published range: OK when the CI meets the range."""
    t_lo, t_hi, cite = TARGETS[q]
    if n == 0 or not np.isfinite(val):
        status = "FAIL"
    else:
        status = "OK" if (hi >= t_lo and lo <= t_hi) else "FAIL"
    return {
        "quantity": q,
        "value": val,
        "ci_low": lo,
        "ci_high": hi,
        "n": int(n),
        "target_low": t_lo,
        "target_high": t_hi,
        "citation": cite,
        "status": status,
    }


def format_report(df: pd.DataFrame) -> str:
    """A plain-text table of :func:`realism_report`'s result."""
    lines = [f"{'quantity':<28}{'value':>10}{'95% CI':>22}{'n':>6}{'target':>18}  status  citation"]
    for r in df.itertuples():
        ci = f"[{r.ci_low:.3g}, {r.ci_high:.3g}]"
        tgt = f"[{r.target_low:g}, {r.target_high:g}]"
        lines.append(
            f"{r.quantity:<28}{r.value:>10.4g}{ci:>22}{r.n:>6}{tgt:>18}  {r.status:<6}  {r.citation}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hypo.cohort realism",
        description="Compare a cohort's images and tables with published ranges.",
    )
    ap.add_argument("root", help="cohort folder")
    ap.add_argument(
        "--max-image-patients",
        type=int,
        default=60,
        help="read intensities from at most this many patients (0 = all)",
    )
    args = ap.parse_args(argv)
    try:
        df = realism_report(args.root, args.max_image_patients or None)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(df))
    n_fail = int((df["status"] == "FAIL").sum())
    print(f"\n{len(df) - n_fail} OK, {n_fail} FAIL")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
