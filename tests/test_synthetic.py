"""Tests of the synthetic stroke DWI cohort generator (tiny grids, a handful of patients)."""

from __future__ import annotations

import json
import math
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hypo._util import rng_for
from hypo.cohort import layout
from hypo.cohort.orientation import to_canonical
from hypo.cohort.synthetic import SynthParams, clinical, generate_cohort, synthesize_patient
from hypo.cohort.synthetic.cli import main as cli_main

SMALL = SynthParams(
    matrix_choices=(64,),
    slice_thickness_mm_choices=(6.0,),
    slice_thickness_weights=(1.0,),
    n_slices_range=(21, 46),
)
SEED = 11


def _lesion_patients(params, n, seed=SEED, limit=60):
    found = []
    for i in range(limit):
        r = synthesize_patient(i, seed, params, n_patients=100)
        if r.masks["lesion"].any():
            found.append(r)
        if len(found) == n:
            return found
    raise AssertionError(f"fewer than {n} lesion patients among the first {limit}")


def test_lesions_inside_brain_tissue_and_their_territory():
    for r in _lesion_patients(SMALL, 4):
        lesion = r.masks["lesion"] > 0
        allowed = r.debug["allowed"]()
        tissue = r.debug["tissue"]()
        assert allowed[lesion].all(), f"{r.participant_id}: lesion outside territory {r.truth}"
        # Partial volume at 6 mm slices may clip a rim voxel; the bulk must be brain tissue.
        assert (r.masks["brain"][lesion] > 0).mean() > 0.98
        assert np.median(tissue[lesion]) > 0.8
        side = r.truth["side"]
        hemi = r.masks["hemisphere"][lesion]
        if side == "left":
            assert (hemi == 1).mean() > 0.95
        elif side == "right":
            assert (hemi == 2).mean() > 0.95


def test_swelling_compresses_ipsilateral_ventricle():
    p_on = SynthParams(
        matrix_choices=(128,),
        slice_thickness_mm_choices=(4.0,),
        slice_thickness_weights=(1.0,),
        stroke_share=1.0,
        territory_probs={"MCA": 1.0},
        bilateral_share=0.0,
        multi_territory_share=0.0,
        mass_effect_mm_at_50ml=5.0,
    )
    p_off = SynthParams(**{**p_on.to_dict(), "mass_effect_scale": 0.0})
    idx = next(
        i
        for i in range(60)
        if synthesize_patient(
            i, SEED, SynthParams(**{**p_on.to_dict(), "matrix_choices": (32,)})
        ).truth["true_tissue_volume_ml"]
        > 60
    )
    on = synthesize_patient(idx, SEED, p_on)
    off = synthesize_patient(idx, SEED, p_off)
    side = 1 if on.truth["side"] == "left" else 2
    assert on.truth["midline_shift_mm"] > 0.5 and off.truth["midline_shift_mm"] == 0.0

    def vent(r, hemi):
        return int(((r.masks["ventricles"] > 0) & (r.masks["hemisphere"] == hemi)).sum())

    ipsi_on, ipsi_off = vent(on, side), vent(off, side)
    contra_on, contra_off = vent(on, 3 - side), vent(off, 3 - side)
    assert ipsi_on < 0.85 * ipsi_off
    # The ipsilateral ventricle shrinks relatively more than the contralateral one.
    assert ipsi_on / ipsi_off < contra_on / max(contra_off, 1) - 0.05


def _read_all(root):
    arrays = {}
    for path in sorted(root.rglob("*.nii.gz")):
        arrays[str(path.relative_to(root))] = np.asarray(nib.load(path).dataobj)
    tables = {
        name: (root / name).read_text()
        for name in (layout.PARTICIPANTS, str(layout.TRUTH_TABLE), layout.SLICE_LABELS)
    }
    return arrays, tables


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    a = tmp_path_factory.mktemp("w1")
    b = tmp_path_factory.mktemp("w2")
    generate_cohort(a, 5, SEED, params=SMALL, workers=1, progress=False)
    generate_cohort(b, 5, SEED, params=SMALL, workers=2, progress=False)
    return a, b


def test_same_seed_same_files_whatever_the_worker_count(two_runs):
    a, b = two_runs
    arr_a, tab_a = _read_all(a)
    arr_b, tab_b = _read_all(b)
    assert arr_a.keys() == arr_b.keys() and len(arr_a) == 5 * 7
    for k in arr_a:
        assert arr_a[k].dtype == arr_b[k].dtype and np.array_equal(arr_a[k], arr_b[k]), k
    assert tab_a == tab_b
    ga, gb = (json.loads((d / layout.GENERATOR).read_text()) for d in (a, b))
    assert ga["hash"] == gb["hash"]


def test_other_seed_gives_other_cohort(two_runs, tmp_path):
    a, _ = two_runs
    generate_cohort(tmp_path, 5, SEED + 1, params=SMALL, workers=1, progress=False)
    assert (tmp_path / layout.PARTICIPANTS).read_text() != (a / layout.PARTICIPANTS).read_text()


def test_layout_dtypes_orientation_and_header(two_runs):
    root, _ = two_runs
    part = pd.read_csv(root / layout.PARTICIPANTS, sep="\t", na_values="n/a")
    assert list(part.columns) == ["participant_id", *layout.CLINICAL_COLUMNS]
    assert list(part["participant_id"]) == [f"sub-{i:03d}" for i in range(1, 6)]
    codes = set()
    for pid in part["participant_id"]:
        img = nib.load(layout.dwi_path(root, pid))
        codes.add(nib.aff2axcodes(img.affine))
        assert img.get_data_dtype() == np.int16
        assert pid not in img.header["descrip"].tobytes().decode(errors="ignore")
        dwi, _, zooms = to_canonical(img)
        mem = synthesize_patient(int(pid[4:]) - 1, SEED, SMALL, n_patients=5)
        # The stored file, reoriented to RAS+, is exactly the in-memory canonical volume.
        assert np.array_equal(dwi, mem.dwi)
        assert 21 <= dwi.shape[2] <= 46
        for label in layout.TRUTH_LABELS:
            m = nib.load(layout.truth_mask_path(root, pid, label))
            assert m.get_data_dtype() == np.uint8
            assert np.allclose(m.affine, img.affine)
        hemi = to_canonical(nib.load(layout.truth_mask_path(root, pid, "hemisphere")))[0]
        # Column 0 of the canonical x axis is the patient's left (RAS+): label 1 there.
        xs = np.nonzero(hemi == 1)[0].mean(), np.nonzero(hemi == 2)[0].mean()
        assert xs[0] < xs[1]
    assert len(codes) >= 1
    truth = pd.read_csv(root / layout.TRUTH_TABLE, sep="\t", na_values="n/a")
    for col in (
        "true_lesion",
        "territory",
        "side",
        "lesion_volume_ml",
        "swelling",
        "midline_shift_mm",
        "mislabelled_tia",
        "ventricle_asymmetry",
        "outcome_linear_predictor",
    ):
        assert col in truth.columns


def test_storage_orientations_vary_across_patients():
    seen = {synthesize_patient(i, SEED, SMALL).grid.storage_orientation for i in range(12)}
    assert len(seen) >= 2 and seen <= {"RAS", "LAS", "LPS"}


def test_rerun_is_noop_and_interrupted_run_resumes(two_runs, tmp_path):
    root = tmp_path / "c"
    generate_cohort(root, 5, SEED, params=SMALL, workers=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    generate_cohort(root, 5, SEED, params=SMALL, workers=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")} == before
    # Interrupt: one patient lost a file, another its done-record.
    victim = layout.dwi_path(root, "sub-002")
    victim.unlink()
    (root / ".synth" / "records" / "sub-004.json").unlink()
    generate_cohort(root, 5, SEED, params=SMALL, workers=1, progress=False)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    assert victim.exists()
    untouched = layout.dwi_path(root, "sub-001")
    assert after[untouched] == before[untouched]
    arr_a, tab_a = _read_all(two_runs[0])
    arr_c, tab_c = _read_all(root)
    assert tab_a == tab_c
    assert all(np.array_equal(arr_a[k], arr_c[k]) for k in arr_a)


def test_tia_patients_have_no_reader_labels_but_mislabelled_ones_have_lesions(tmp_path):
    p = SynthParams(**{**SMALL.to_dict(), "stroke_share": 0.0, "tia_mislabelled_share": 0.5})
    generate_cohort(tmp_path, 6, SEED, params=p, workers=1, progress=False)
    part = pd.read_csv(tmp_path / layout.PARTICIPANTS, sep="\t", na_values="n/a")
    truth = pd.read_csv(tmp_path / layout.TRUTH_TABLE, sep="\t", na_values="n/a")
    sl = pd.read_csv(tmp_path / layout.SLICE_LABELS, sep="\t")
    assert (part["group"] == "TIA").all()
    assert sl["lesion_visible"].sum() == 0
    mis = truth[truth["mislabelled_tia"] == 1]
    assert len(mis) >= 1 and len(mis) < 6
    assert (mis["true_lesion"] == 1).all() and (mis["lesion_volume_ml"] > 0).all()
    assert (truth.loc[truth["mislabelled_tia"] == 0, "true_lesion"] == 0).all()
    for pid in mis["participant_id"]:
        assert np.asarray(nib.load(layout.truth_mask_path(tmp_path, pid, "lesion")).dataobj).any()
        assert not np.asarray(nib.load(layout.lesion_mask_path(tmp_path, pid)).dataobj).any()


def test_reader_labels_follow_lesion_area(two_runs):
    root, _ = two_runs
    sl = pd.read_csv(root / layout.SLICE_LABELS, sep="\t")
    part = pd.read_csv(root / layout.PARTICIPANTS, sep="\t", na_values="n/a")
    for pid, grp in zip(part["participant_id"], part["group"]):
        mask, _, zooms = to_canonical(nib.load(layout.truth_mask_path(root, pid, "lesion")))
        area = (mask > 0).sum(axis=(0, 1)) * zooms[0] * zooms[1]
        labels = sl.loc[sl["participant_id"] == pid].sort_values("slice")["lesion_visible"]
        expect = (area >= SMALL.reader_min_area_mm2).astype(int) if grp == "stroke" else 0 * area
        assert np.array_equal(labels.to_numpy(), expect)


def _simulate_outcomes(mode, n=3000):
    p = SynthParams()
    rows = []
    for i in range(n):
        r = rng_for(5, i).spawn(3)
        demo = clinical.draw_demographics(r[0], p)
        demo["group"] = "stroke"
        plan = clinical.draw_lesion_plan(r[1], p, "stroke")
        vol = plan["components"][0].volume_ml
        swell = float(r[1].standard_normal())
        c = clinical.draw_clinical_course(r[2], p, demo, plan, vol, swell, mode)
        rows.append((math.log(vol + 1), swell, c["mrs_3months_complete"], c["nihss_baseline"]))
    return np.array(rows)


def test_null_modes_cut_the_image_paths_to_mrs():
    null = _simulate_outcomes("null")
    assert abs(stats.spearmanr(null[:, 0], null[:, 2])[0]) < 0.08
    assert abs(stats.spearmanr(null[:, 1], null[:, 2])[0]) < 0.08
    cond = _simulate_outcomes("conditional_null")
    assert stats.spearmanr(cond[:, 0], cond[:, 2])[0] > 0.15
    assert abs(stats.spearmanr(cond[:, 1], cond[:, 2])[0]) < 0.08
    default = _simulate_outcomes("default")
    assert stats.spearmanr(default[:, 1], default[:, 2])[0] > 0.05
    p = SynthParams()
    for mode in ("null", "conditional_null"):
        c = clinical.outcome_coefficients(p, mode)
        assert c["swelling_per_sd_by_cut"] == [0.0] * 6
        assert "swelling -> mrs_3months" not in clinical.causal_graph(mode)
    c = clinical.outcome_coefficients(p, "null")
    assert c["log_lesion_volume_ml_plus_1"] == 0 and c["nihss_baseline"] == 0
    assert not any(
        e.endswith("-> mrs_3months")
        and e.split(" ->")[0] in ("lesion_volume", "nihss_baseline", "side", "territory")
        for e in clinical.causal_graph("null")
    )
    d = clinical.outcome_coefficients(p, "default")
    assert math.isclose(math.exp(d["swelling_per_sd_by_cut"][0]), 1.5)
    nonpo = clinical.outcome_coefficients(p, "nonpo")
    assert len(set(nonpo["swelling_per_sd_by_cut"])) > 1 and not nonpo["proportional_odds"]


def test_generator_json_documents_the_run(two_runs):
    g = json.loads((two_runs[0] / layout.GENERATOR).read_text())
    assert g["mode"] == "default" and g["n_patients"] == 5 and g["seed"] == SEED
    assert g["params"]["matrix_choices"] == [64]
    assert "side -> nihss_baseline" in g["causal_graph"]
    assert "swelling -> mrs_3months" in g["causal_graph"]
    assert g["outcome_model"]["coefficients"]["nihss_baseline"] > 0
    assert "numpy" in g["library_versions"] and len(g["hash"]) == 16


def test_params_json_roundtrip_and_errors(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"matrix_choices": [64], "bilateral_share": 0.2}))
    p = SynthParams.from_json(f)
    assert p.matrix_choices == (64,) and p.bilateral_share == 0.2
    f.write_text(json.dumps({"matrix_size": 64}))
    with pytest.raises(ValueError, match="matrix_size"):
        SynthParams.from_json(f)
    with pytest.raises(ValueError, match="stroke_share"):
        SynthParams(stroke_share=1.5).validate()
    with pytest.raises(ValueError, match="mode"):
        generate_cohort(tmp_path / "x", 2, 1, mode="nul", params=SMALL)


def test_cli_writes_a_null_cohort(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(SMALL.to_dict()))
    out = tmp_path / "cohort"
    rc = cli_main(
        [
            "--out",
            str(out),
            "--patients",
            "2",
            "--seed",
            "3",
            "--null",
            "--params",
            str(f),
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    g = json.loads((out / layout.GENERATOR).read_text())
    assert g["mode"] == "null" and g["outcome_model"]["coefficients"]["nihss_baseline"] == 0
    assert os.path.exists(layout.dwi_path(out, "sub-002"))
