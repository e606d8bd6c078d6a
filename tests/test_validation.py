"""hypo.cohort.validate: each kind of bad input is reported, named and explained."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import hypo.cohort
from hypo.cohort import layout
from hypo.cohort.__main__ import main as cli
from tests.helpers import canonical_affine, make_tiny_cohort, tiny_volume, write_nifti

pytestmark = pytest.mark.usefixtures("hypo_cache")


def _problems_for(problems, pid):
    return [p for p in problems if p.participant_id == pid]


def _edit_table(root, fn):
    t = pd.read_csv(root / layout.PARTICIPANTS, sep="\t", dtype=str, keep_default_na=False)
    t = fn(t)
    t.to_csv(root / layout.PARTICIPANTS, sep="\t", index=False)


def test_valid_cohort_has_no_problems(tmp_path):
    root = make_tiny_cohort(tmp_path, 3, slice_labels=True, synthetic=True, axcodes="LPS")
    assert hypo.cohort.validate(root) == []


def test_truncated_gzip(tiny_cohort):
    path = layout.dwi_path(tiny_cohort, "sub-002")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    problems = hypo.cohort.validate(tiny_cohort)
    assert len(problems) == 1
    p = problems[0]
    assert p.participant_id == "sub-002" and p.where == "sub-002/dwi/sub-002_dwi.nii.gz"
    assert "truncated" in p.what
    # Header checks alone cannot see it: document the trade-off with a test.
    assert hypo.cohort.validate(tiny_cohort, check_voxels=False) == []


def test_unreadable_file(tiny_cohort):
    layout.dwi_path(tiny_cohort, "sub-001").write_bytes(b"this is not a nifti file")
    (p,) = hypo.cohort.validate(tiny_cohort)
    assert p.participant_id == "sub-001" and "unreadable" in p.what


def test_wrong_dimensionality(tiny_cohort):
    write_nifti(
        layout.dwi_path(tiny_cohort, "sub-001"), np.ones((6, 6, 4, 3), np.float32), np.eye(4)
    )
    problems = _problems_for(hypo.cohort.validate(tiny_cohort), "sub-001")
    assert any("(6, 6, 4, 3)" in p.what and "3D" in p.expected for p in problems)


def test_nan_and_inf_voxels(tiny_cohort):
    data, _ = tiny_volume(seed=0)
    data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf
    write_nifti(layout.dwi_path(tiny_cohort, "sub-001"), data, canonical_affine())
    (p,) = hypo.cohort.validate(tiny_cohort)
    assert p.participant_id == "sub-001" and "2 NaN/inf" in p.what


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_empty_volume(tiny_cohort, value):
    shape = tiny_volume()[0].shape
    write_nifti(
        layout.dwi_path(tiny_cohort, "sub-003"),
        np.full(shape, value, np.float32),
        canonical_affine(),
    )
    problems = hypo.cohort.validate(tiny_cohort)
    assert [p.participant_id for p in problems] == ["sub-003"]
    assert "empty" in problems[0].what


def test_mask_shape_mismatch(tiny_cohort):
    write_nifti(
        layout.lesion_mask_path(tiny_cohort, "sub-001"), np.zeros((5, 5, 5), np.uint8), np.eye(4)
    )
    (p,) = hypo.cohort.validate(tiny_cohort)
    assert p.participant_id == "sub-001" and "lesion mask has shape (5, 5, 5)" in p.what
    assert "derivatives/lesion_masks" in p.where


def test_mask_affine_mismatch(tiny_cohort):
    _, mask = tiny_volume()
    shifted = canonical_affine()
    shifted[0, 3] += 0.5
    write_nifti(layout.lesion_mask_path(tiny_cohort, "sub-001"), mask, shifted)
    (p,) = hypo.cohort.validate(tiny_cohort)
    assert "affine differs" in p.what and "0.5" in p.what
    # Below the 1e-3 mm tolerance is the same grid.
    shifted[0, 3] -= 0.5 - 1e-5
    write_nifti(layout.lesion_mask_path(tiny_cohort, "sub-001"), mask, shifted)
    assert hypo.cohort.validate(tiny_cohort) == []


def test_patient_in_table_without_images_and_reverse(tiny_cohort):
    layout.dwi_path(tiny_cohort, "sub-002").unlink()
    data, _ = tiny_volume()
    write_nifti(layout.dwi_path(tiny_cohort, "sub-777"), data, canonical_affine())
    problems = hypo.cohort.validate(tiny_cohort)
    by_pid = {p.participant_id: p for p in problems}
    assert set(by_pid) == {"sub-002", "sub-777"}
    assert "missing" in by_pid["sub-002"].what
    assert "no row in participants.tsv" in by_pid["sub-777"].what


def test_duplicate_ids(tiny_cohort):
    _edit_table(tiny_cohort, lambda t: pd.concat([t, t.iloc[[1]]]))
    problems = hypo.cohort.validate(tiny_cohort)
    assert [p.participant_id for p in problems] == ["sub-002"]
    assert "2 times" in problems[0].what


@pytest.mark.parametrize("column", ["mrs_3months", "mrs_before"])
@pytest.mark.parametrize("bad", ["7", "-1", "2.5", "severe"])
def test_mrs_out_of_range_or_not_integer(tiny_cohort, column, bad):
    def edit(t):
        t.loc[0, column] = bad
        return t

    _edit_table(tiny_cohort, edit)
    (p,) = hypo.cohort.validate(tiny_cohort)
    assert p.participant_id == "sub-001" and p.where == f"participants.tsv:{column}"
    assert bad in p.what and "0 to 6" in p.expected


def test_mrs_missing_value_is_fine(tiny_cohort):
    def edit(t):
        t.loc[0, "mrs_3months"] = "n/a"
        return t

    _edit_table(tiny_cohort, edit)
    assert hypo.cohort.validate(tiny_cohort) == []


@pytest.mark.parametrize("column", ["participant_id", "group"])
def test_missing_required_column(tiny_cohort, column):
    _edit_table(tiny_cohort, lambda t: t.drop(columns=column))
    problems = hypo.cohort.validate(tiny_cohort)
    cohort_level = [p for p in problems if p.participant_id is None]
    assert any(p.where == f"participants.tsv:{column}" for p in cohort_level)


def test_bad_group_value(tiny_cohort):
    def edit(t):
        t.loc[2, "group"] = "maybe"
        return t

    _edit_table(tiny_cohort, edit)
    (p,) = hypo.cohort.validate(tiny_cohort)
    assert p.participant_id == "sub-003" and "'maybe'" in p.what


@pytest.mark.parametrize("bad_id", ["001", "sub_001", "sub-0 1", "sub-"])
def test_malformed_participant_id(tiny_cohort, bad_id):
    def edit(t):
        t.loc[0, "participant_id"] = bad_id
        return t

    _edit_table(tiny_cohort, edit)
    problems = hypo.cohort.validate(tiny_cohort)
    malformed = [p for p in problems if "malformed" in p.what]
    assert len(malformed) == 1 and repr(bad_id) in malformed[0].what
    # sub-001's images are now orphaned as well.
    assert any(p.participant_id == "sub-001" and "no row" in p.what for p in problems)


def test_slice_label_problems(tmp_path):
    root = make_tiny_cohort(tmp_path, 2, slice_labels=True)
    t = pd.read_csv(root / layout.SLICE_LABELS, sep="\t")
    t.loc[0, "slice"] = 99
    t.loc[1, "lesion_visible"] = 2
    t = pd.concat([t, t.iloc[[3]]])
    t.to_csv(root / layout.SLICE_LABELS, sep="\t", index=False)
    problems = hypo.cohort.validate(root)
    whats = " | ".join(p.what for p in problems)
    assert "slice '99'" in whats and "lesion_visible '2'" in whats and "labelled twice" in whats
    assert {p.participant_id for p in problems} == {"sub-001"}


def test_problem_str_is_one_readable_line(tiny_cohort):
    layout.dwi_path(tiny_cohort, "sub-001").unlink()
    (p,) = hypo.cohort.validate(tiny_cohort)
    line = str(p)
    assert "\n" not in line
    assert line.startswith("sub-001: sub-001/dwi/sub-001_dwi.nii.gz:") and "expected" in line


def test_cli_validate_exit_codes(tiny_cohort, capsys):
    assert cli(["validate", str(tiny_cohort)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("OK")
    layout.dwi_path(tiny_cohort, "sub-002").unlink()
    _edit_table(tiny_cohort, lambda t: t.assign(mrs_before=["0", "9", "0"]))
    assert cli(["validate", str(tiny_cohort)]) != 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("sub-002:") for line in lines) == 2
    # --skip-invalid: patient-level problems still listed, but the cohort is usable.
    assert cli(["validate", str(tiny_cohort), "--skip-invalid"]) == 0
    assert "sub-002" in capsys.readouterr().out


def test_validation_speed_scales(tmp_path):
    """Full voxel checks of 40 small gzip volumes stay well inside the 30 s / 511 budget."""
    root = make_tiny_cohort(tmp_path, 40, shape=(48, 48, 12))
    t0 = time.perf_counter()
    assert hypo.cohort.validate(root) == []
    per_patient = (time.perf_counter() - t0) / 40
    assert per_patient * 511 < 30.0


def test_empty_table_is_a_cohort_problem(tiny_cohort):
    _edit_table(tiny_cohort, lambda t: t.iloc[:0])
    problems = hypo.cohort.validate(tiny_cohort)
    assert any(p.participant_id is None and "no rows" in p.what for p in problems)
