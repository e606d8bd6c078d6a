"""Importers of the paper group's HDF5 + CSV and of ISLES 2022, and their CLI commands."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

import hypo.cohort
from hypo.cohort import layout
from hypo.cohort.__main__ import main as cli
from hypo.cohort.importers import import_isles2022, import_paper_hdf5
from hypo.cohort.orientation import axial_slices
from tests.helpers import canonical_affine, reorient, tiny_volume, write_nifti

# Expected by every paper import; tests that care assert them with pytest.warns.
pytestmark = [
    pytest.mark.usefixtures("hypo_cache"),
    pytest.mark.filterwarnings("ignore:.*records no voxel size"),
    pytest.mark.filterwarnings("ignore:.*have no slices in"),
]

ROWS, COLS = 16, 20
PATIENTS = {7: (1, 5), 12: (0, 3), 3: (1, 4)}  # pat -> (stroke, number of slices)


def _paper_slices(seed=0):
    """Per patient: slices in img_id order, their labels and img_ids."""
    rng = np.random.default_rng(seed)
    out = {}
    for p, (stroke, n) in PATIENTS.items():
        slices = rng.integers(1, 256, (n, ROWS, COLS), dtype=np.uint8)
        slices[:, :, : COLS // 4] = 0  # an asymmetric feature catches a flip
        labels = (np.arange(n) % 2) * stroke
        img_ids = 100 * p + np.arange(n) * 3
        out[p] = (slices, labels, img_ids)
    return out


def _write_paper_h5(path, truth, *, stroke_override=None, drop=None, colour=False):
    xs, ys, pats, strokes, ids, paths = [], [], [], [], [], []
    for p, (slices, labels, img_ids) in truth.items():
        for k in range(len(slices)):
            rgb = np.repeat(slices[k][..., None], 3, axis=2)
            if colour and k == 0:
                rgb[..., 0] = 255 - rgb[..., 0]
            xs.append(rgb)
            ys.append(labels[k])
            pats.append(p)
            strokes.append(PATIENTS[p][0])
            ids.append(img_ids[k])
            paths.append(f"/data/{p}/{img_ids[k]}.jpg".encode())
    order = np.random.default_rng(1).permutation(len(xs))  # file order is not slice order
    data = {
        "X": np.stack(xs)[order],
        "Y": np.asarray(ys)[order],
        "pat": np.asarray(pats)[order],
        "stroke": np.asarray(strokes)[order],
        "img_id": np.asarray(ids)[order],
        "path": np.asarray(paths)[order],
    }
    if stroke_override is not None:
        data["stroke"][0] = 1 - data["stroke"][0]
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k != drop:
                f.create_dataset(k, data=v)
    return path


def _write_paper_csv(path, sex=("m", "w", "M", "f")):
    pd.DataFrame(
        {
            "p_id": [3, 7, 12, 99],
            "age": [71, 64, 80, 55],
            "sex": list(sex),
            "mrs_before": [0, 1, 0, 2],
            "nihss_baseline": [5, 12, 1, 3],
            "ivt": [1, 0, 0, 1],
            "iat": [0, 1, 0, 0],
            "event": [1, 1, 0, 1],
            "mrs_3months": [2, np.nan, 0, 4],
            "nihss_24h": [3, 10, 0, 2],
            "nihss_3months": [1, 8, 0, 1],
        }
    ).to_csv(path, index=False)
    return path


@pytest.fixture
def paper(tmp_path):
    truth = _paper_slices()
    h5 = _write_paper_h5(tmp_path / "slices.h5", truth)
    csv = _write_paper_csv(tmp_path / "clinical.csv")
    return truth, h5, csv


def test_paper_import_round_trip(tmp_path, paper):
    truth, h5, csv = paper
    with pytest.warns(UserWarning) as record:
        out = import_paper_hdf5(h5, csv, tmp_path / "paper", voxel_mm=(0.9, 0.9, 6.5))
    messages = " ".join(str(w.message) for w in record)
    assert "no voxel size" in messages and "sub-0099" in messages
    assert hypo.cohort.validate(out) == []
    cohort = hypo.cohort.load(out)
    assert cohort.participant_ids() == ["sub-0003", "sub-0007", "sub-0012"]
    p = cohort.participants
    assert list(p["group"]) == ["stroke", "stroke", "TIA"]
    assert list(p["sex"]) == ["M", "F", "M"]
    assert np.isnan(p.loc["sub-0007", "mrs_3months"]) and p.loc["sub-0003", "mrs_3months"] == 2
    assert {"ivt", "iat", "event", "nihss_24h", "nihss_3months"} <= set(p.columns)
    labels = cohort.slice_labels()
    assert (labels["label_source"] == "reader").all()
    for pat, (slices, y, img_ids) in truth.items():
        pid = f"sub-{pat:04d}"
        vol = cohort.dwi(pid)
        assert vol.window is None
        np.testing.assert_allclose(vol.zooms, [0.9, 0.9, 6.5])
        # The 2D view of the stored volume is exactly the HDF5's slices, in img_id order.
        np.testing.assert_array_equal(axial_slices(vol.data), slices.astype(np.float32))
        mine = labels[labels.participant_id == pid]
        np.testing.assert_array_equal(mine["lesion_visible"], y.astype(bool))
        np.testing.assert_array_equal(mine["img_id"], img_ids)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["HypoImport"]["assumptions"]["voxel_mm"] == [0.9, 0.9, 6.5]


def test_paper_import_superior_first_reverses(tmp_path, paper):
    truth, h5, csv = paper
    with pytest.warns(UserWarning):
        out = import_paper_hdf5(h5, csv, tmp_path / "rev", superior_first=True)
    vol = hypo.cohort.load(out).dwi("sub-0007")
    np.testing.assert_array_equal(axial_slices(vol.data), truth[7][0][::-1].astype(np.float32))


def test_paper_import_colour_channels_become_grey(tmp_path, paper):
    truth, _, csv = paper
    h5 = _write_paper_h5(tmp_path / "colour.h5", truth, colour=True)
    with pytest.warns(UserWarning, match="unequal colour channels"):
        out = import_paper_hdf5(h5, csv, tmp_path / "c")
    first = axial_slices(hypo.cohort.load(out).dwi("sub-0003").data)[0]
    assert not np.array_equal(first, truth[3][0][0].astype(np.float32))


def test_paper_numeric_sex_codes(tmp_path, paper):
    _, h5, _ = paper
    csv = _write_paper_csv(tmp_path / "num.csv", sex=(1, 0, 1, 0))
    with pytest.warns(UserWarning, match="sex is coded as numbers"):
        out = import_paper_hdf5(h5, csv, tmp_path / "kept")
    assert list(hypo.cohort.load(out).participants["sex"]) == [1, 0, 1]
    with pytest.warns(UserWarning):
        out = import_paper_hdf5(h5, csv, tmp_path / "coded", sex_codes={0: "F", 1: "M"})
    assert list(hypo.cohort.load(out).participants["sex"]) == ["M", "F", "M"]
    with pytest.raises(ValueError, match="sex codes"):
        import_paper_hdf5(h5, csv, tmp_path / "partial", sex_codes={1: "M"})


def test_paper_bad_inputs_leave_nothing_behind(tmp_path, paper):
    truth, _, csv = paper
    missing = _write_paper_h5(tmp_path / "nokey.h5", truth, drop="pat")
    with pytest.raises(ValueError, match=r"\['pat'\]"):
        import_paper_hdf5(missing, csv, tmp_path / "a")
    mixed = _write_paper_h5(tmp_path / "mixed.h5", truth, stroke_override=True)
    with pytest.raises(ValueError, match="stroke and TIA"), pytest.warns(UserWarning):
        import_paper_hdf5(mixed, csv, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    bad_sex = _write_paper_csv(tmp_path / "sex.csv", sex=("m", "x", "m", "f"))
    with pytest.raises(ValueError, match=r"sex values \['x'\]"):
        import_paper_hdf5(missing, bad_sex, tmp_path / "c")


def test_paper_existing_out_dir_needs_overwrite(tmp_path, paper):
    _, h5, csv = paper
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        import_paper_hdf5(h5, csv, tmp_path / "taken")
    with pytest.warns(UserWarning):
        import_paper_hdf5(h5, csv, tmp_path / "taken", overwrite=True)
    assert not (tmp_path / "taken" / "keep.txt").exists()
    assert hypo.cohort.validate(tmp_path / "taken") == []


def test_cli_import_paper_and_info(tmp_path, paper, capsys):
    _, h5, csv = paper
    out = tmp_path / "cli"
    argv = ["import-paper", str(h5), str(csv), "--out", str(out), "--voxel-mm", "1", "1", "5"]
    with pytest.warns(UserWarning):
        assert cli(argv) == 0
    np.testing.assert_allclose(hypo.cohort.load(out).dwi("sub-0003").zooms, [1, 1, 5])
    capsys.readouterr()
    assert cli(["info", str(out)]) == 0
    info = capsys.readouterr().out
    n_lesion = sum(int(((np.arange(n) % 2) * s).sum()) for s, n in PATIENTS.values())
    assert "patients      3 (TIA 1, stroke 2)" in info
    assert f"slices        {sum(n for _, n in PATIENTS.values())}" in info
    assert f"lesion slices {n_lesion}" in info


# --------------------------------------------------------------------------- ISLES


def _write_isles(root, n=3, missing_mask=None):
    affine = canonical_affine()
    for i in range(1, n + 1):
        sub, ses = f"sub-strokecase{i:04d}", "ses-0001"
        data, mask = tiny_volume(seed=i)
        d, a = reorient(data, affine, "LPS")
        write_nifti(root / "rawdata" / sub / ses / "dwi" / f"{sub}_{ses}_dwi.nii.gz", d, a)
        write_nifti(root / "rawdata" / sub / ses / "anat" / f"{sub}_{ses}_FLAIR.nii.gz", d, a)
        if i != missing_mask:
            m, ma = reorient(mask, affine, "LPS")
            write_nifti(root / "derivatives" / sub / ses / f"{sub}_{ses}_msk.nii.gz", m, ma)
    return root


def test_isles_import(tmp_path):
    src = _write_isles(tmp_path / "ISLES-2022")
    out = import_isles2022(src, tmp_path / "isles")
    assert hypo.cohort.validate(out) == []
    cohort = hypo.cohort.load(out)
    assert cohort.participant_ids() == [f"sub-strokecase{i:04d}" for i in (1, 2, 3)]
    assert set(cohort.participants["group"]) == {"stroke"}
    assert cohort.participants["mrs_3months"].isna().all()
    _, mask = tiny_volume(seed=2)
    np.testing.assert_array_equal(cohort.lesion_mask("sub-strokecase0002"), mask)
    assert cohort.dwi("sub-strokecase0002").native_axcodes == ("L", "P", "S")
    raw = src / "rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz"
    assert layout.dwi_path(out, "sub-strokecase0001").read_bytes() == raw.read_bytes()
    assert (cohort.slice_labels()["label_source"] == "mask").all()


def test_isles_missing_mask_and_empty_root(tmp_path):
    src = _write_isles(tmp_path / "src", n=2, missing_mask=2)
    with pytest.warns(UserWarning, match="no lesion mask"):
        out = import_isles2022(src, tmp_path / "isles")
    cohort = hypo.cohort.load(out)
    assert cohort.lesion_mask("sub-strokecase0002") is None
    assert cohort.lesion_mask("sub-strokecase0001") is not None
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="rawdata"):
        import_isles2022(tmp_path / "empty", tmp_path / "none")


def test_cli_import_isles(tmp_path, capsys):
    src = _write_isles(tmp_path / "src", n=2)
    assert cli(["import-isles", str(src), "--out", str(tmp_path / "o")]) == 0
    assert cli(["validate", str(tmp_path / "o")]) == 0
    assert cli(["import-isles", str(src), "--out", str(tmp_path / "o")]) == 1  # exists
    assert "exists" in capsys.readouterr().err


def test_cli_delegates_synth_and_realism_verbatim(monkeypatch):
    import sys
    import types

    calls = {}
    for name in ("hypo.cohort.synthetic.cli", "hypo.cohort.realism"):
        mod = types.ModuleType(name)
        mod.main = lambda argv, _n=name: calls.setdefault(_n, list(argv)) and 0
        monkeypatch.setitem(sys.modules, name, mod)
    assert cli(["synth", "--patients", "5", "--out", "x", "--help"]) == 0
    assert cli(["realism", "DIR", "--seed", "1"]) == 0
    assert calls["hypo.cohort.synthetic.cli"] == ["--patients", "5", "--out", "x", "--help"]
    assert calls["hypo.cohort.realism"] == ["DIR", "--seed", "1"]
