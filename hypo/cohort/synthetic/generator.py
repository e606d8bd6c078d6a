"""Generate a synthetic stroke DWI cohort in the layout of :mod:`hypo.cohort.layout`."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from ... import _util
from .. import layout
from . import clinical, imaging
from .anatomy import load_template
from .lesions import draw_lesion
from .params import MODES, SynthParams
from .territories import territory_masks

GENERATOR_VERSION = "1"
_RECORDS = Path(".synth") / "records"
_TRUTH_COLUMNS = (
    "participant_id",
    "true_lesion",
    "territory",
    "side",
    "lesion_volume_ml",
    "true_tissue_volume_ml",
    "swelling",
    "swelling_latent",
    "mass_effect_mm",
    "midline_shift_mm",
    "mislabelled_tia",
    "ventricle_expansion",
    "ventricle_asymmetry",
    "outcome_linear_predictor",
    "mrs_3months_complete",
    "storage_orientation",
    "susceptibility_artefact",
    "gm_wm_ratio",
    "csf_wm_ratio",
    "lesion_tissue_ratio",
)


@dataclass
class PatientResult:
    """One patient in memory: images (canonical RAS+), tables' rows, and debug maps."""

    participant_id: str
    grid: imaging.Grid
    dwi: np.ndarray
    masks: dict
    participant: dict
    truth: dict
    lesion_visible: list
    debug: dict


def participant_id(index: int, n_patients: int) -> str:
    """``sub-001`` style id for patient ``index`` (0-based), zero-padded to the cohort size."""
    width = max(3, len(str(n_patients)))
    return f"sub-{index + 1:0{width}d}"


def synthesize_patient(
    index: int,
    seed: int,
    params: SynthParams | None = None,
    mode: str = "default",
    n_patients: int = 1,
    rotation_deg: tuple[float, float, float] | None = None,
    contrast: str = "b1000",
) -> PatientResult:
    """Synthesize patient ``index`` of the cohort ``seed`` in memory.

    The patient draws only from ``rng_for(seed, index)`` (split into independent sub-streams
    for demographics, lesion, clinical course, anatomy, contrast and noise), so results do
    not depend on other patients or on worker processes, and switching the mass effect off
    leaves the anatomy of the same patient unchanged.

    ``rotation_deg`` (pitch, roll, yaw about the scanner's x, y, z axes, degrees) replaces
    the drawn head rotation, to test anatomy on a known tilt; every random draw is made as
    without it, so the rest of the patient is unchanged. ``contrast`` (``"b1000"``,
    ``"b0"``, ``"adc"``) renders the same patient in another contrast
    (:data:`imaging.CONTRAST_RATIOS`); the ADC map is 0 outside the head, as scanners
    store it.
    """
    p = params or SynthParams()
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    r_demo, r_les, r_clin, r_anat, r_img, r_noise = _util.rng_for(seed, index).spawn(6)
    pid = participant_id(index, n_patients)
    anat = load_template(p.anatomy_resolution_mm)
    masks_t = territory_masks(p.anatomy_resolution_mm)

    demo = clinical.draw_demographics(r_demo, p)
    plan = clinical.draw_lesion_plan(r_les, p, demo["group"])
    grid = imaging.draw_grid(r_anat, p)
    pose = imaging.draw_pose(r_anat, p)
    if rotation_deg is not None:
        rot = imaging._rotation(np.asarray(rotation_deg, float))
        pose = imaging.Pose(rot, pose.translation_mm, pose.scale)
    deform = imaging.draw_deformation(r_anat, p)
    age_k = p.ventricle_expansion_per_decade * (demo["age"] - 50) / 10 + r_anat.normal(
        0, p.ventricle_expansion_sd
    )
    age_k = max(age_k, -0.1)
    asym = float(r_anat.normal(0, p.ventricle_asymmetry_sd))
    expansion = {"left": age_k + asym / 2, "right": age_k - asym / 2}

    head_volume_scale = float(np.prod(pose.scale))
    swelling_z = float(r_les.standard_normal())
    if plan["components"]:
        lesion_t, allowed_t, centres = draw_lesion(
            r_les,
            anat,
            masks_t,
            plan["components"],
            irregularity=p.lesion_irregularity,
            field_sigma_mm=p.lesion_field_sigma_mm,
            satellites_mean=p.lesion_satellites_mean,
        )
        tissue_ml = float(lesion_t.sum()) * anat.voxel_mm**3 / 1000.0 * head_volume_scale
        swelling = swelling_z
        swelling_latent = (
            p.swelling_log_volume_coef * math.log(tissue_ml) + p.swelling_sd * swelling
        )
        # The dominant (first) component drives the mass effect.
        main = _largest_component_centre(lesion_t, anat, centres[0])
        amp = (
            p.mass_effect_scale
            * p.mass_effect_mm_at_50ml
            * (tissue_ml / 50.0) ** p.mass_effect_volume_exponent
            * math.exp(p.mass_effect_swelling_coef * p.swelling_sd * swelling)
        )
        radius = (3.0 * tissue_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
        amp = min(amp, 0.35 * radius)
        # Move the centre into the (pre-deformation) head frame, to first order.
        c = main[:, None]
        c = c + deform(c) + imaging.ventricle_displacement(c, expansion)
        mass = imaging.MassEffect(c[:, 0], radius, amp, p.mass_effect_decay_mm)
    else:
        lesion_t = np.zeros(anat.shape, bool)
        allowed_t = np.zeros(anat.shape, bool)
        tissue_ml, swelling, swelling_latent, mass = 0.0, 0.0, float("nan"), None

    course = clinical.draw_clinical_course(r_clin, p, demo, plan, tissue_ml, swelling, mode)

    effacement = p.effacement_per_mm * mass.amplitude_mm if mass is not None else 0.0
    vol, ratios, extra = imaging.contrast_volume(
        r_img,
        p,
        anat,
        lesion_t,
        effacement,
        ventricle_effacement=p.ventricle_effacement_per_mm * mass.amplitude_mm if mass else 0.0,
        centre_mm=main if mass else None,
        radius_mm=mass.radius_mm if mass else 0.0,
        contrast=contrast,
    )

    # --- backward map: scanner voxel -> template ------------------------------------
    pts = imaging.scanner_points(grid).reshape(3, -1)
    q = imaging.head_to_template(pose, pts)
    in_head = ndi.map_coordinates(anat.maps["head"], anat.mm_to_index(q), order=0) > 0.5
    sel = np.flatnonzero(in_head)
    qs = q[:, sel]
    # Below ~0.25 mm the push is invisible at these voxel sizes; skip its cost.
    if mass is not None and mass.amplitude_mm > 0.25:
        qs = qs - mass(qs, anat)
    qs = qs - imaging.ventricle_displacement(qs, expansion)
    qs = qs - deform(qs)
    idx = anat.mm_to_index(qs).astype(np.float64)
    # One voxel step along the slice axis, in template index units.
    step = (pose.rotation.T @ grid.affine[:3, 2]) / pose.scale / anat.voxel_mm
    n_sub = p.partial_volume_subsamples
    signal = np.zeros(sel.size, np.float32)
    for m in range(n_sub):
        delta = (m + 0.5) / n_sub - 0.5
        signal += ndi.map_coordinates(vol, idx + (delta * step)[:, None], order=1)
    signal /= n_sub

    def sample(v, within=None):
        """Sample template map ``v`` on the grid; only points inside the box ``within``."""
        out = np.zeros(pts.shape[1], np.float32)
        if within is None:
            out[sel] = ndi.map_coordinates(v, idx, order=1)
        else:
            lo = np.array([b.start for b in within])[:, None] - 1
            hi = np.array([b.stop for b in within])[:, None]
            near = np.flatnonzero(((idx >= lo) & (idx <= hi)).all(axis=0))
            out[sel[near]] = ndi.map_coordinates(v, idx[:, near], order=1)
        return out.reshape(grid.shape)

    brain = sample(anat.maps["brain"]) > 0.5
    if extra["lesion_pv"] is not None:
        les_pv = sample(extra["lesion_pv"], imaging._box(lesion_t, 2))
        # A lesion smaller than a voxel still shows as a faint dot: keep its peak voxels.
        lesion = les_pv > min(0.5, 0.5 * float(les_pv.max()))
    else:
        lesion = np.zeros(grid.shape, bool)
    vent_t = extra["ventricles"]
    vent = sample(vent_t, imaging._box(vent_t > 0.25, 1)) > 0.5
    cortex = sample(anat.maps["cortex"]) > 0.5
    left = np.zeros(pts.shape[1], bool)
    left[sel] = qs[0] < 0
    hemi = np.where(left.reshape(grid.shape), 1, 2).astype(np.uint8) * brain

    # --- intensities: scale, bias, Rician noise ------------------------------------
    wm_signal = r_noise.uniform(*p.wm_signal_range)
    sigma = wm_signal / r_noise.uniform(*p.snr_wm_range)
    clean = np.zeros(pts.shape[1], np.float32)
    clean[sel] = wm_signal * signal * imaging.bias_field(r_noise, p, pts[:, sel])
    n1 = r_noise.standard_normal(clean.size, dtype=np.float32)
    n2 = r_noise.standard_normal(clean.size, dtype=np.float32)
    dwi = np.sqrt((clean + sigma * n1) ** 2 + (sigma * n2) ** 2)
    if contrast == "adc":
        # A fitted ADC map: Gaussian noise on the tissue's value, background masked to 0.
        dwi = np.where(in_head, np.maximum(clean + sigma * n1, 0.0), 0.0)
    dwi = np.clip(np.rint(dwi), 0, 32767).astype(np.int16).reshape(grid.shape)

    # --- tables ----------------------------------------------------------------------
    vox_ml = float(np.prod(grid.zooms_mm)) / 1000.0
    area_mm2 = lesion.sum(axis=(0, 1)) * grid.zooms_mm[0] * grid.zooms_mm[1]
    visible = (area_mm2 >= p.reader_min_area_mm2).astype(int)
    if demo["group"] == "TIA":
        visible[:] = 0  # the reader saw nothing: TIA by diagnosis
    participant = {"participant_id": pid}
    for col in layout.CLINICAL_COLUMNS:
        participant[col] = course[col] if col in course else demo[col]
    truth = {
        "participant_id": pid,
        "true_lesion": int(lesion.any()),
        "territory": plan["territory"],
        "side": plan["side"],
        "lesion_volume_ml": round(float(lesion.sum()) * vox_ml, 4),
        "true_tissue_volume_ml": round(tissue_ml, 4),
        "swelling": round(swelling, 6),
        "swelling_latent": None if math.isnan(swelling_latent) else round(swelling_latent, 6),
        "mass_effect_mm": round(mass.amplitude_mm, 4) if mass else 0.0,
        "midline_shift_mm": round(mass.midline_shift_mm() * float(pose.scale[0]), 4)
        if mass
        else 0.0,
        "mislabelled_tia": plan["mislabelled_tia"],
        "ventricle_expansion": round(age_k, 6),
        "ventricle_asymmetry": round(asym, 6),
        "outcome_linear_predictor": round(course["outcome_linear_predictor"], 6),
        "mrs_3months_complete": course["mrs_3months_complete"],
        "storage_orientation": grid.storage_orientation,
        "susceptibility_artefact": ratios["susceptibility_artefact"],
        "gm_wm_ratio": round(ratios["gm_wm"], 4),
        "csf_wm_ratio": round(ratios["csf_wm"], 4),
        "lesion_tissue_ratio": round(ratios["lesion_tissue"], 4),
    }
    # The manual segmentation a researcher would have: the reader missed mislabelled TIAs.
    manual = lesion if demo["group"] == "stroke" else np.zeros_like(lesion)
    masks_out = {
        "lesion": lesion.astype(np.uint8),
        "brain": brain.astype(np.uint8),
        "ventricles": vent.astype(np.uint8),
        "cortex": cortex.astype(np.uint8),
        "hemisphere": hemi,
        "manual_lesion": manual.astype(np.uint8),
    }
    debug = {
        "allowed": lambda: sample(allowed_t.astype(np.float32)) > 0.01,
        "tissue": lambda: sample(anat.maps["gm"] + anat.maps["wm"]),
        "expansion": expansion,
    }
    return PatientResult(pid, grid, dwi, masks_out, participant, truth, visible.tolist(), debug)


def _largest_component_centre(lesion: np.ndarray, anat, fallback: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(lesion)
    if n == 0:
        return np.asarray(fallback, float)
    sizes = ndi.sum(lesion, lab, index=np.arange(1, n + 1))
    com = ndi.center_of_mass(lesion, lab, int(np.argmax(sizes)) + 1)
    return anat.affine[:3, :3] @ np.asarray(com) + anat.affine[:3, 3]


# --- writing -------------------------------------------------------------------------


def _save_nifti(data: np.ndarray, grid: imaging.Grid, path: Path, dtype) -> None:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), grid.affine)
    target = nib.orientations.axcodes2ornt(tuple(grid.storage_orientation))
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), target)
    img = img.as_reoriented(ornt)
    hdr = img.header
    hdr.set_data_dtype(dtype)
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = b"hypo synthetic DWI cohort"
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with _util.atomic_path(path) as tmp:
        nib.save(img, tmp)


def write_patient(root: Path, res: PatientResult, run_hash: str) -> dict:
    """Write one patient's files, then its record (the done-marker) last."""
    pid = res.participant_id
    _save_nifti(res.dwi, res.grid, layout.dwi_path(root, pid), np.int16)
    _save_nifti(res.masks["manual_lesion"], res.grid, layout.lesion_mask_path(root, pid), np.uint8)
    for label in layout.TRUTH_LABELS:
        _save_nifti(res.masks[label], res.grid, layout.truth_mask_path(root, pid, label), np.uint8)
    record = {
        "hash": run_hash,
        "participant": res.participant,
        "truth": res.truth,
        "lesion_visible": res.lesion_visible,
    }
    _util.write_json_atomic(Path(root) / _RECORDS / f"{pid}.json", record)
    return record


def _patient_files(root: Path, pid: str) -> list[Path]:
    return [
        layout.dwi_path(root, pid),
        layout.lesion_mask_path(root, pid),
        *(layout.truth_mask_path(root, pid, lab) for lab in layout.TRUTH_LABELS),
    ]


def _load_done(root: Path, pid: str, run_hash: str) -> dict | None:
    rec_path = Path(root) / _RECORDS / f"{pid}.json"
    if not rec_path.exists():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("hash") != run_hash or not all(f.exists() for f in _patient_files(root, pid)):
        return None
    return rec


def _work(args) -> dict:
    root, index, seed, params_dict, mode, n, run_hash, contrast = args
    res = synthesize_patient(
        index, seed, SynthParams.from_dict(params_dict), mode, n, contrast=contrast
    )
    return write_patient(Path(root), res, run_hash)


def _library_versions() -> dict:
    return _util.library_versions(("python", "numpy", "scipy", "nibabel", "nilearn", "pandas"))


def generator_description(n_patients: int, seed: int, mode: str, params: SynthParams) -> dict:
    """Everything ``generator.json`` holds except ``hash`` and library versions."""
    return {
        "generator": "hypo.cohort.synthetic",
        "generator_version": GENERATOR_VERSION,
        "n_patients": n_patients,
        "seed": seed,
        "mode": mode,
        "params": params.to_dict(),
        "outcome_model": {
            "description": clinical.__doc__.strip(),
            "coefficients": clinical.outcome_coefficients(params, mode),
        },
        "causal_graph": clinical.causal_graph(mode),
        "notes": {
            "lesion_volume_ml": "measured from the generated truth mask x voxel volume",
            "true_tissue_volume_ml": "infarct tissue before swelling; enters NIHSS and mRS",
            "swelling": "standardised residual swelling factor, N(0,1); 0 without infarct",
            "midline_shift_mm": "displacement across the midline through the infarct centre",
            "ventricle_asymmetry": "left minus right ventricular expansion factor (natural)",
            "lesion_masks": "manual segmentation: empty for TIA-labelled patients",
            "slice": "canonical RAS+ axial slice index, inferior to superior from 0",
        },
    }


def generate_cohort(
    out_dir: str | os.PathLike,
    n_patients: int,
    seed: int,
    mode: str = "default",
    params: SynthParams | None = None,
    workers: int | None = None,
    progress: bool = True,
    contrast: str = "b1000",
) -> Path:
    """Generate (or resume) a synthetic stroke DWI cohort.

    Parameters
    ----------
    out_dir : path
        Cohort folder (created). A complete cohort with the same parameter hash is left as
        it is; an interrupted one is resumed, keeping patients whose files and done-record
        exist.
    n_patients : int
        Number of patients (the paper's development cohort: 511).
    seed : int
        Cohort seed; patient ``i`` draws from ``rng_for(seed, i)``.
    mode : {"default", "null", "conditional_null", "nonpo"}
        Outcome model (see :mod:`hypo.cohort.synthetic.clinical`).
    params : SynthParams, optional
        Every other knob; defaults from the paper.
    workers : int, optional
        Worker processes (default: CPU count). Results do not depend on it.
    progress : bool
        Show a tqdm progress bar.
    contrast : {"b1000", "b0", "adc"}
        The image contrast rendered (the same patients, anatomy and truth in each); a
        contrast other than b1000 is declared in ``generator.json`` (``contrast``).

    Returns
    -------
    Path
        ``out_dir``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if int(n_patients) < 1:
        raise ValueError(f"n_patients = {n_patients}: expected >= 1")
    p = (params or SynthParams()).validate()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    if contrast not in imaging.RENDERED_CONTRASTS:
        raise ValueError(
            f"contrast {contrast!r}: the generator renders {imaging.RENDERED_CONTRASTS}"
        )
    desc = generator_description(int(n_patients), int(seed), mode, p)
    if contrast != "b1000":
        # Absent means b1000 (what cohorts generated before this option hold), so their
        # description, hash and files stay as they were.
        desc["contrast"] = contrast
    run_hash = _util.stable_hash(desc)
    gen_path = root / layout.GENERATOR
    pids = [participant_id(i, n_patients) for i in range(n_patients)]

    records: dict[int, dict] = {}
    for i, pid in enumerate(pids):
        rec = _load_done(root, pid, run_hash)
        if rec is not None:
            records[i] = rec
    todo = [i for i in range(n_patients) if i not in records]
    if not todo and gen_path.exists():
        try:
            if json.loads(gen_path.read_text()).get("hash") == run_hash:
                return root
        except (OSError, json.JSONDecodeError):
            pass

    if todo:
        jobs = [
            (str(root), i, int(seed), p.to_dict(), mode, n_patients, run_hash, contrast)
            for i in todo
        ]
        records.update(_run_jobs(jobs, p, workers, progress))

    _write_tables(root, [records[i] for i in range(n_patients)])
    gen = dict(desc, hash=run_hash, library_versions=_library_versions())
    _util.write_json_atomic(gen_path, gen)
    return root


def _run_jobs(jobs: list, p: SynthParams, workers, progress: bool) -> dict[int, dict]:
    """Synthesise the patients of ``jobs`` (in worker processes when there are several)."""
    load_template(p.anatomy_resolution_mm)  # forked workers inherit the cached anatomy
    territory_masks(p.anatomy_resolution_mm)
    records = {}
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = _progress(len(jobs), progress)
    if n_workers == 1:
        for job in jobs:
            records[job[1]] = _work(job)
            bar.update(1)
    else:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        if ctx.get_start_method() == "fork":
            # A forked child gets only the forking thread: a lock held by one of the shared
            # workers' feeder threads would stay held in it for good. Stop them first
            # (restarted on demand).
            _util.shutdown_process_pool()
        with cf.ProcessPoolExecutor(
            n_workers,
            mp_context=ctx,
            initializer=_util.single_thread_worker,
            initargs=(ctx.get_start_method() != "fork",),
        ) as pool:
            futures = {pool.submit(_work, job): job[1] for job in jobs}
            for fut in cf.as_completed(futures):
                records[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    return records


def _write_tables(root: Path, ordered: list[dict]) -> None:
    """participants.tsv, the truth table and slice_labels.tsv of the patients, in order."""
    participants = pd.DataFrame([r["participant"] for r in ordered])
    participants = participants[["participant_id", *layout.CLINICAL_COLUMNS]]
    for col in participants.columns:
        if col not in ("participant_id", "sex", "group", "onset_to_imaging_h"):
            participants[col] = participants[col].astype("Int64")
    truth = pd.DataFrame([r["truth"] for r in ordered])[list(_TRUTH_COLUMNS)]
    truth["mrs_3months_complete"] = truth["mrs_3months_complete"].astype("Int64")
    slices = pd.DataFrame(
        [
            {"participant_id": r["participant"]["participant_id"], "slice": k, "lesion_visible": v}
            for r in ordered
            for k, v in enumerate(r["lesion_visible"])
        ]
    )
    _util.write_table_atomic(root / layout.PARTICIPANTS, participants)
    _util.write_table_atomic(root / layout.TRUTH_TABLE, truth)
    _util.write_table_atomic(root / layout.SLICE_LABELS, slices)


def _progress(total: int, enabled: bool):

    return tqdm(total=total, desc="synthetic patients", unit="patient", disable=not enabled)
