"""A researcher's own cohort, end to end: broken cohorts are refused before any work.

Each unusable cohort is refused by ``python -m analyses.asymmetry_vs_mrs --cohort DIR``
within 15 s, before TensorFlow is imported, with a message naming the file or column, no
traceback and no results left behind. The usable ones (a mapped mRS column, mixed voxel
sizes) are analysed in one shared ``--quick`` run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from hypo.cohort import layout
from hypo.cohort.requirements import Requirements, preflight
from hypo.stats.registry import Registry
from hypo.study.config import HYPOTHESES_DIR, REQUIREMENTS
from tests.helpers import isolate_hypo, make_tiny_cohort, tiny_model, write_nifti

ROOT = Path(__file__).resolve().parents[1]
N = 8


def _table(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / layout.PARTICIPANTS, sep="\t", dtype=str, keep_default_na=False)


def _write_table(root: Path, df: pd.DataFrame) -> None:
    df.to_csv(root / layout.PARTICIPANTS, sep="\t", index=False)


def _base(tmp: Path, name: str, **kw) -> Path:
    return make_tiny_cohort(tmp, N, name=name, slice_labels=kw.pop("slice_labels", True), **kw)


def _rename_mrs(root: Path) -> None:
    _write_table(root, _table(root).rename(columns={"mrs_3months": "mRS_90d"}))


def _drop_column(root: Path, col: str) -> None:
    _write_table(root, _table(root).drop(columns=[col]))


def _set_value(root: Path, col: str, value: str) -> None:
    df = _table(root)
    df.loc[0, col] = value
    _write_table(root, df)


def _rezoom(root: Path, pid: str, zooms) -> None:
    """Re-save a patient's DWI and mask with other voxel sizes (same grid for both)."""
    for path in (layout.dwi_path(root, pid), layout.lesion_mask_path(root, pid)):
        img = nib.load(path)
        aff = np.diag([*zooms, 1.0])
        write_nifti(path, np.asanyarray(img.dataobj), aff)


def _four_d(root: Path) -> None:
    path = layout.dwi_path(root, "sub-001")
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    write_nifti(path, np.stack([data, data * 0.5], axis=-1), img.affine)


def _nan_voxels(root: Path) -> None:
    path = layout.dwi_path(root, "sub-003")
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data[2, 2, 2] = np.nan
    write_nifti(path, data, img.affine)


def _mask_grid(root: Path) -> None:
    path = layout.lesion_mask_path(root, "sub-001")
    img = nib.load(path)
    write_nifti(path, np.zeros((10, 10, 4), np.uint8), img.affine)


def _no_masks(root: Path) -> None:
    shutil.rmtree(root / "derivatives" / "lesion_masks")
    (root / layout.SLICE_LABELS).unlink(missing_ok=True)


#: (name, how the cohort is broken, text the refusal must contain)
BROKEN = [
    ("no-masks-no-labels", _no_masks, "label-lesion_mask.nii.gz: is missing"),
    ("mrs-named-otherwise", _rename_mrs, "participants.tsv:mrs_3months: column is missing"),
    ("no-age", lambda r: _drop_column(r, "age"), "participants.tsv:age: column is missing"),
    ("no-nihss", lambda r: _drop_column(r, "nihss_baseline"), "nihss_baseline"),
    ("mrs-9", lambda r: _set_value(r, "mrs_3months", "9"), "mrs_3months is '9'"),
    ("four-d", _four_d, "sub-001_dwi.nii.gz"),
    ("nan-voxels", _nan_voxels, "NaN/inf voxels"),
    ("mask-other-grid", _mask_grid, "sub-001_label-lesion_mask.nii.gz"),
    ("no-table", lambda r: (r / layout.PARTICIPANTS).unlink(), "participants.tsv: is missing"),
    ("bad-sidecar", lambda r: (r / layout.COLUMN_MAP).write_text("[1, 2]"), "hypo_columns.json"),
    (
        "map-to-nothing",
        lambda r: (r / layout.COLUMN_MAP).write_text('{"mrs_3months": "mrs90"}'),
        "participants.tsv:mrs90: column is missing",
    ),
    ("no-outcomes", lambda r: _drop_outcomes(r), "usable stroke patients with mrs_3months"),
    ("isles-missing-mask", lambda r: _isles_missing_mask(r), "strokecase0002_label-lesion_mask"),
]


def _isles_missing_mask(root: Path) -> None:
    """Replace the cohort by an ISLES-2022 tree with one mask missing, imported as hypo does
    (the importer warns about the mask; ISLES has no outcomes)."""
    from hypo.cohort.importers import import_isles2022
    from tests.test_importers import _write_isles

    shutil.rmtree(root)
    src = _write_isles(root.parent / f"{root.name}-src", n=3, missing_mask=2)
    with pytest.warns(UserWarning):
        import_isles2022(src, root)


def _drop_outcomes(root: Path) -> None:
    df = _table(root)
    df["mrs_3months"] = "n/a"
    _write_table(root, df)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    out = {}
    for name, breaks, _ in BROKEN:
        root = _base(tmp, name)
        breaks(root)
        out[name] = root
    return tmp, out


def test_every_broken_cohort_is_refused_before_tensorflow_without_a_traceback(cohorts):
    tmp, roots = cohorts
    script = (
        "import json, sys, time, contextlib, io\n"
        "from analyses.asymmetry_vs_mrs import main\n"
        "res = {}\n"
        "for name, root in json.loads(sys.argv[1]).items():\n"
        "    err = io.StringIO(); t = time.perf_counter()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main(['--cohort', root, '--out', root + '-out', '--quiet'])\n"
        "    res[name] = {'rc': rc, 's': time.perf_counter() - t, 'err': err.getvalue(),\n"
        "                 'tf': 'tensorflow' in sys.modules}\n"
        "print(json.dumps(res))\n"
    )
    env = {**os.environ, "HYPO_DATA": str(tmp / "data"), "HYPO_CACHE": str(tmp / "cache")}
    args = json.dumps({k: str(v) for k, v in roots.items()})
    proc = subprocess.run([sys.executable, "-c", script, args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, _, expected in BROKEN:
        r = res[name]
        assert r["rc"] == 2, (name, r)
        assert expected in r["err"], (name, r["err"])
        assert "Traceback" not in r["err"], (name, r["err"])
        assert not r["tf"], f"{name}: TensorFlow was imported before the refusal"
        assert r["s"] < 15, (name, r["s"])
        assert not Path(str(roots[name]) + "-out").exists(), f"{name}: results left behind"


def test_requirements_cover_the_registry():
    """The preflight asks for every participants.tsv covariate a registered test uses."""
    reg = Registry.load(HYPOTHESES_DIR)
    image_made = {"log_lesion_volume_ml", "lesion_side_right"}
    used = set()
    for h in reg.hypotheses.values():
        used |= set(h.covariates)
    assert used - image_made <= set(REQUIREMENTS.columns)
    # Sensitivity covariates are optional: a table without them gets "not applicable" rows.
    assert REQUIREMENTS.outcome in REQUIREMENTS.columns


def test_preflight_names_columns_masks_and_counts(tmp_path):
    root = _base(tmp_path, "c", masks=False, slice_labels=False)
    req = Requirements("demo", columns={"age": "x", "shoe_size": "why not"},
                       lesion_labels="labels", outcome="mrs_3months", min_patients=50)  # fmt: skip
    text = "\n".join(map(str, preflight(root, req)))
    assert "participants.tsv:shoe_size: column is missing" in text
    assert "--column shoe_size=YOUR_COLUMN" in text
    assert "slice_labels.tsv: is missing" in text
    assert "at least 50 for demo" in text
    assert "participants.tsv:age" not in text


@pytest.fixture(scope="module")
def usable_run(tmp_path_factory):
    """One cohort a researcher might bring, usable after a column map: mRS named mRS_90d
    (mapped by the sidecar), NIHSS named nihss_admission (mapped by --column), patients
    with other voxel sizes. Analysed with --quick and two tiny models."""
    from hypo.cohort.synthetic import generate_cohort

    tmp = tmp_path_factory.mktemp("usable")
    root = tmp / "mine"
    generate_cohort(root, n_patients=30, seed=20230901, workers=2, progress=False)
    # What a researcher has: images, masks, a table; no generator, no truth.
    (root / layout.GENERATOR).unlink()
    shutil.rmtree(root / layout.TRUTH_DIR)
    _rename_mrs(root)
    _write_table(root, _table(root).rename(columns={"nihss_baseline": "nihss_admission"}))
    (root / layout.COLUMN_MAP).write_text(json.dumps({"mrs_3months": "mRS_90d"}))
    pids = sorted(p.name for p in root.glob("sub-*"))
    _rezoom(root, pids[1], (1.5, 1.5, 4.0))
    _rezoom(root, pids[2], (2.5, 2.5, 6.0))
    cohort = {"id": "elsewhere", "generator_hash": "synthetic"}  # trained on synthetic data
    models = {
        "stroke": tiny_model("gap", ("no stroke", "stroke"), tmp / "m" / "s", cohort),
        "mrs": tiny_model("mrs", ("no stroke", "mRS 0-2", "mRS 3-6"), tmp / "m" / "m", cohort),
    }
    from analyses.asymmetry_vs_mrs import main

    out = tmp / "out"
    argv = ["--cohort", str(root), "--stroke-model", str(models["stroke"]), "--mrs-model",
            str(models["mrs"]), "--no-outcome-model", "--quick", "--quiet", "--out", str(out),
            "--column", "nihss_baseline=nihss_admission"]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, tmp)
        check = main([*argv, "--check"])
        rc = main(argv)
    return {"rc": rc, "check": check, "out": out, "root": root}


def test_usable_own_cohort_is_checked_then_analysed(usable_run):
    assert usable_run["check"] == 0
    assert usable_run["rc"] == 0
    out = usable_run["out"]
    res = pd.read_csv(out / "results.csv")
    feats = pd.read_csv(out / "features.csv")
    assert "mrs_3months" in feats.columns and "nihss_baseline" in feats.columns
    cam = res[(res["map_source"] == "cam") & (res["analysis"] == "primary")]
    assert len(cam) == 8 and (cam["n"] > 0).sum() >= 4  # a fit may separate at n = 15
    assert not list(out.parent.glob(".out.*")), "a temporary result folder was left behind"


def test_every_n_is_explained_by_the_flow_per_hypothesis(usable_run):
    out = usable_run["out"]
    res = pd.read_csv(out / "results.csv")
    flow = pd.read_csv(out / "patient_flow_by_hypothesis.csv")
    cam = res[res["map_source"] == "cam"].set_index(["hypothesis", "analysis"])
    checked = 0
    for (hid, analysis), g in flow.groupby(["hypothesis", "analysis"], sort=False):
        # The primary steps end at the primary fit's n, the sensitivity steps at its own
        # (a fit that failed, e.g. separated, has no n; its error says why).
        n = cam.loc[(hid, analysis), "n"]
        assert np.isnan(n) or g["n_remaining"].iloc[-1] == n, (hid, analysis)
        checked += int(not np.isnan(n))
    assert checked >= 4
    feats = pd.read_csv(out / "features.csv")
    n_pop = int(feats["analysis_population"].sum())
    assert (flow.loc[flow["step"] == "analysis population", "n_remaining"] == n_pop).all()
    md = (out / "report.md").read_text()
    assert "Patients per registered test" in md
    assert "trained on a synthetic cohort" in md  # models of synthetic data on own scans
    res = pd.read_csv(out / "results.csv")
    assert "truth" not in set(res["hypothesis"])  # no generator, no coverage rows
