"""Anatomy QC: implausible volumes, missing masks on lesion slices, and a run that stops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hypo.features.anatomy import Anatomy
from hypo.features.anatomy_qc import AnatomyQCError, anatomy_qc, check_anatomy_qc


def _fixture(volumes_ml, brain_on_lesion_slice=True):
    n = 4  # slices per patient
    pids = [f"sub-{i + 1}" for i in range(len(volumes_ml))]
    st = pd.DataFrame(
        {
            "participant_id": np.repeat(pids, n),
            "pixel_mm_row": 1.0,
            "pixel_mm_col": 1.0,
            "slice_thickness_mm": 5.0,
            "lesion_visible": [0, 1, 1, 0] * len(pids),
        }
    )
    area = np.full(len(st), 10000.0)
    if not brain_on_lesion_slice:
        area[1:3] = 0.0  # the first patient's lesion slices have no brain
    at = pd.DataFrame(
        {
            "brain_area_mm2": area,
            "ventricle_area_left_mm2": 100.0,
            "ventricle_area_right_mm2": 80.0,
            "plane_residual_mm": 0.5,
        }
    )
    patients = pd.DataFrame(
        {
            "participant_id": pids,
            "source": [f"/data/{p}_dwi.nii.gz" for p in pids],
            "n_slices_with_brain": 25,
            "voxel_mm_z": 5.0,
            "brain_volume_ml": volumes_ml,
            "plane_symmetry": 0.8,
            "plane_tilt_deg": 3.0,
        }
    )

    class Store:
        table = st

    return Anatomy(np.zeros((len(st), 2, 2), np.uint8), at, None, patients), Store


def test_plausible_patients_pass_with_measures():
    an, store = _fixture([1200.0, 1100.0])
    qc = anatomy_qc(an, store)
    assert qc["qc_pass"].all() and (qc["qc_reason"] == "").all()
    np.testing.assert_allclose(qc["ventricle_volume_ml"], 4 * 180 * 5 / 1000)
    np.testing.assert_allclose(qc["brain_ml_per_mm"], [1200 / 125, 1100 / 125])
    assert (qc["lesion_slices_with_brain"] == 1.0).all()
    check_anatomy_qc(qc)


def test_failures_have_reasons_and_a_run_stops_naming_the_files():
    # 5365 mL: dipy's S0_10slices as its header's 53 mm slice step makes it.
    an, store = _fixture([5365.0, 1100.0, 1200.0], brain_on_lesion_slice=False)
    qc = anatomy_qc(an, store).set_index("participant_id")
    assert not qc.at["sub-1", "qc_pass"]
    assert "above 2500 mL" in qc.at["sub-1", "qc_reason"]
    assert "lesion slices have a brain mask" in qc.at["sub-1", "qc_reason"]
    assert qc.loc[["sub-2", "sub-3"], "qc_pass"].all()
    with pytest.raises(AnatomyQCError, match=r"sub-1 \(/data/sub-1_dwi.nii.gz\)"):
        check_anatomy_qc(qc.reset_index())  # 1 of 3 > 20 %
    check_anatomy_qc(qc.reset_index(), max_fail_fraction=0.5)  # overridable


def test_partial_coverage_is_judged_per_mm():
    an, store = _fixture([300.0])  # 300 mL over 125 mm: 2.4 mL/mm, too little brain
    qc = anatomy_qc(an, store)
    assert not qc["qc_pass"].iat[0] and "per mm" in qc["qc_reason"].iat[0]
    an.patients["n_slices_with_brain"] = 8  # the same 300 mL over a 40 mm slab: plausible
    assert anatomy_qc(an, store)["qc_pass"].iat[0]
