"""Per-patient quality control of the image-derived anatomy, loud by design.

:func:`anatomy_qc` turns an :class:`hypo.features.anatomy.Anatomy` (volume method) and its
slice store into one row per patient: brain volume against a plausible range that allows
for partial coverage, the share of lesion slices that got a brain mask, the midsagittal
plane's symmetry and the per-slice midlines' departure from it, and the ventricle volume.
A failing patient has ``qc_pass`` False and a ``qc_reason`` naming every failed check; a
measure that cannot be taken is NaN *with* its reason. :func:`check_anatomy_qc` stops a run
in which more than ``max_fail_fraction`` of the patients fail, naming their files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["AnatomyQCConfig", "AnatomyQCError", "anatomy_qc", "check_anatomy_qc"]


@dataclass(frozen=True)
class AnatomyQCConfig:
    """Thresholds of the anatomy QC.

    Parameters
    ----------
    brain_ml_per_mm_range : (float, float)
        Plausible brain volume per mm of covered head height (mL/mm): the covered height is
        the number of slices with brain times the slice spacing, so a partial coverage is
        judged on what it covers. An adult brain of 1000-1600 mL spread over ~110-130 mm
        averages 8-13 mL/mm, the vertex and skull-base slabs less: 3-16 mL/mm.
    brain_volume_max_ml : float
        No adult brain mask exceeds this (mL), whatever the header's slice spacing says:
        adult intracranial volumes reach ~2.1 L, and the mask holds some of the CSF around
        the brain (the synthetic analysis cohort's largest truth brain is 2.18 L).
    min_lesion_slices_with_brain : float
        Smallest share of the slices marked ``lesion_visible`` that must hold a brain mask.
    min_plane_symmetry : float
        Smallest correlation of the head with its mirror image about the plane.
    max_plane_residual_mm : float
        Largest median distance (mm) between the per-slice midlines (moved onto the fissure
        where a slice shows it) and the plane's lines.
    max_fail_fraction : float
        :func:`check_anatomy_qc` stops the run when more than this share of patients fail.
    """

    brain_ml_per_mm_range: tuple = (3.0, 16.0)
    brain_volume_max_ml: float = 2500.0
    min_lesion_slices_with_brain: float = 0.9
    min_plane_symmetry: float = 0.3
    max_plane_residual_mm: float = 5.0
    max_fail_fraction: float = 0.2


class AnatomyQCError(RuntimeError):
    """Too many patients failed the anatomy QC; the message names them and their files."""


def anatomy_qc(anatomy, store, config: AnatomyQCConfig | None = None) -> pd.DataFrame:
    """One QC row per patient of a store's anatomy (volume method).

    Returns
    -------
    DataFrame
        ``participant_id``, ``source`` (the volume's file), ``brain_volume_ml``,
        ``covered_height_mm``, ``brain_ml_per_mm``, ``n_lesion_slices``,
        ``lesion_slices_with_brain`` (share; NaN when the patient has no lesion slice),
        ``plane_symmetry``, ``plane_tilt_deg``, ``plane_residual_mm``,
        ``ventricle_volume_ml``, ``qc_pass`` and ``qc_reason`` ("" when passed).
    """
    config = config or AnatomyQCConfig()
    if anatomy.patients is None:
        raise ValueError(
            f"anatomy {anatomy.path}: no per-patient table; the QC needs the volume method "
            "(AnatomyConfig(volume=True))"
        )
    st = store.table
    at = anatomy.table
    pids = st["participant_id"].astype(str).to_numpy()
    thick = st["slice_thickness_mm"].to_numpy() if "slice_thickness_mm" in st else np.ones(len(st))
    vent_mm2 = (at["ventricle_area_left_mm2"] + at["ventricle_area_right_mm2"]).to_numpy()
    has_brain = at["brain_area_mm2"].to_numpy() > 0
    visible = (
        st["lesion_visible"].fillna(0).astype(int).to_numpy()
        if "lesion_visible" in st
        else np.zeros(len(st), int)
    )
    resid = at["plane_residual_mm"].to_numpy() if "plane_residual_mm" in at else None
    lo, hi = config.brain_ml_per_mm_range
    rows = []
    for rec in anatomy.patients.to_dict("records"):
        pid = rec["participant_id"]
        idx = np.flatnonzero(pids == pid)
        reasons = []
        height = rec["n_slices_with_brain"] * rec["voxel_mm_z"]
        vol = rec["brain_volume_ml"]
        per_mm = vol / height if height > 0 else np.nan
        if not vol > 0:
            reasons.append("no brain found in the volume")
        elif vol > config.brain_volume_max_ml:
            reasons.append(
                f"brain volume {vol:.0f} mL above {config.brain_volume_max_ml:.0f} mL "
                f"(slice spacing {rec['voxel_mm_z']:.1f} mm in the header?)"
            )
        elif not lo <= per_mm <= hi:
            reasons.append(
                f"brain volume {per_mm:.1f} mL per mm of covered height outside {lo}-{hi}"
            )
        n_les = int(visible[idx].sum())
        share = float(has_brain[idx][visible[idx] > 0].mean()) if n_les else np.nan
        if n_les and share < config.min_lesion_slices_with_brain:
            reasons.append(f"only {share:.0%} of {n_les} lesion slices have a brain mask")
        sym = rec["plane_symmetry"]
        if not np.isfinite(sym):
            reasons.append("no midsagittal plane (no brain)")
        elif sym < config.min_plane_symmetry:
            reasons.append(f"plane symmetry {sym:.2f} below {config.min_plane_symmetry}")
        res = float(np.nanmedian(resid[idx])) if resid is not None and np.isfinite(
            resid[idx]
        ).any() else np.nan  # fmt: skip
        if np.isfinite(res) and res > config.max_plane_residual_mm:
            reasons.append(
                f"per-slice midlines {res:.1f} mm from the plane (> {config.max_plane_residual_mm})"
            )
        rows.append(
            {
                "participant_id": pid,
                "source": rec.get("source"),
                "brain_volume_ml": vol,
                "covered_height_mm": height,
                "brain_ml_per_mm": per_mm,
                "n_lesion_slices": n_les,
                "lesion_slices_with_brain": share,
                "plane_symmetry": sym,
                "plane_tilt_deg": rec["plane_tilt_deg"],
                "plane_residual_mm": res,
                "ventricle_volume_ml": float((vent_mm2[idx] * thick[idx]).sum() / 1000.0),
                "qc_pass": not reasons,
                "qc_reason": "; ".join(reasons),
            }
        )
    return pd.DataFrame(rows)


def check_anatomy_qc(qc: pd.DataFrame, max_fail_fraction: float | None = None) -> None:
    """Stop (:class:`AnatomyQCError`) when more than ``max_fail_fraction`` of patients fail.

    The default is :attr:`AnatomyQCConfig.max_fail_fraction` (0.2). The message names each
    failing patient, its file and its reason.
    """
    frac = AnatomyQCConfig().max_fail_fraction if max_fail_fraction is None else max_fail_fraction
    if not 0 <= frac <= 1:
        raise ValueError(f"max_fail_fraction={frac}; expected 0-1")
    failed = qc[~qc["qc_pass"].astype(bool)]
    if len(qc) and len(failed) / len(qc) > frac:
        lines = [f"  {r.participant_id} ({r.source}): {r.qc_reason}" for r in failed.itertuples()]
        raise AnatomyQCError(
            f"anatomy QC failed for {len(failed)} of {len(qc)} patients "
            f"(more than {frac:.0%}; raise max_fail_fraction to go on):\n" + "\n".join(lines)
        )
