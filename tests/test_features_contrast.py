"""Contrast: declared by the cohort (or detected and written), and the anatomy per contrast."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import hypo.cohort as hc
from hypo.cohort import layout
from hypo.cohort.contrast import csf_polarity, lesion_polarity, normalise_contrast
from hypo.features.brain3d import (
    brain_mask_3d,
    detect_csf_polarity,
    fit_midsagittal_plane,
)
from tests.helpers import make_tiny_cohort


def test_declared_contrast_column_and_generator(tmp_path):
    root = make_tiny_cohort(tmp_path, n_patients=2)
    tsv = root / layout.PARTICIPANTS
    df = pd.read_csv(tsv, sep="\t")
    df["contrast"] = ["ADC", "dwi"]
    df.to_csv(tsv, sep="\t", index=False)
    c = hc.load(root)
    assert c.contrast_of("sub-001") == "adc" and c.contrast_of("sub-002") == "b1000"
    df["contrast"] = ["pd", "b0"]
    df.to_csv(tsv, sep="\t", index=False)
    c = hc.load(root)
    with pytest.raises(ValueError, match=r"participants.tsv, column 'contrast', sub-001.*'pd'"):
        c.contrast_of("sub-001")
    assert c.contrast_of("sub-002") == "b0"
    # A synthetic cohort declares its own (absent: b1000, all the generator once rendered).
    syn = make_tiny_cohort(tmp_path, n_patients=1, name="syn", synthetic=True)
    assert hc.load(syn).contrast_of("sub-001") == "b1000"
    gen = json.loads((syn / layout.GENERATOR).read_text())
    (syn / layout.GENERATOR).write_text(json.dumps({**gen, "contrast": "b0"}))
    assert hc.load(syn).contrast_of("sub-001") == "b0"
    assert (
        hc.load(make_tiny_cohort(tmp_path, n_patients=1, name="own")).contrast_of("sub-001") is None
    )  # undeclared: the anatomy detects it


def test_polarities():
    assert csf_polarity("b1000") == "dark" and csf_polarity("flair") == "dark"
    assert {csf_polarity(c) for c in ("b0", "t2", "adc", "epi")} == {"bright"}
    assert lesion_polarity("adc") == "dark" and lesion_polarity("b0") is None
    assert normalise_contrast("Trace", "x") == "b1000"
    with pytest.raises(ValueError, match="x: contrast 'swi'"):
        normalise_contrast("swi", "x")


def _patient(contrast):
    from hypo.cohort.synthetic import synthesize_patient

    return synthesize_patient(3, 2, n_patients=10, contrast=contrast)


@pytest.fixture(scope="module")
def three():
    return {c: _patient(c) for c in ("b1000", "b0", "adc")}


def test_same_patient_same_truth_in_every_contrast(three):
    for c in ("b0", "adc"):
        for m in ("brain", "lesion", "ventricles", "hemisphere"):
            np.testing.assert_array_equal(three[c].masks[m], three["b1000"].masks[m])
    assert (three["adc"].dwi == 0).mean() > 0.3 > (three["b1000"].dwi == 0).mean()  # masked


def test_contrast_detected_from_the_image(three):
    for c, want in (("b1000", "dark"), ("b0", "bright"), ("adc", "bright")):
        data = three[c].dwi.astype(np.float32)
        A = three[c].grid.affine
        brain = brain_mask_3d(data, A)
        plane = fit_midsagittal_plane(data, A, brain)
        assert detect_csf_polarity(data, A, brain, plane) == want, c


def _dice(a, b):
    s = a.sum() + b.sum()
    return 2 * (a & b).sum() / s if s else float("nan")


@pytest.mark.parametrize("contrast", ["b1000", "b0", "adc"])
def test_brain_ventricles_and_lesion_per_contrast(tmp_path, monkeypatch, contrast):
    # The pipeline's path: a generated cohort, its slice store, the anatomy of the store.
    from hypo.cohort.synthetic import generate_cohort
    from hypo.features.anatomy import anatomy_for_store
    from hypo.features.anatomy_qc import anatomy_qc
    from hypo.preprocess import PreprocessConfig, build_slice_store

    monkeypatch.setenv("HYPO_CACHE", str(tmp_path / "cache"))
    root = generate_cohort(tmp_path / contrast, 4, seed=2, workers=1, progress=False,
                           contrast=contrast)  # fmt: skip
    cohort = hc.load(root)
    assert cohort.contrast_of("sub-001") == contrast
    store = build_slice_store(cohort, PreprocessConfig(size=128), progress=False)
    an = anatomy_for_store(store, progress=False)
    assert (an.patients["contrast"] == contrast).all()
    assert (an.patients["contrast_source"] == "declared").all()
    lab = np.asarray(an.labels)
    pids = store.table["participant_id"].to_numpy()
    level = an.table["ventricle_level"].to_numpy()
    for pid in cohort.participant_ids():
        i = pids == pid
        brain = (lab[i] & 1) > 0
        assert _dice(brain, np.asarray(store.masks["truth_brain"][i]) > 0) >= 0.95, pid
        j = i & level
        vent = (lab[j] & 8) > 0
        assert _dice(vent, np.asarray(store.masks["truth_ventricles"][j]) > 0) >= 0.6, pid
    les = (lab & 32) > 0
    truth = np.asarray(store.masks["truth_lesion"]) > 0
    if contrast == "b1000":
        i = pids == "sub-002"  # 15 mL, left
        assert _dice(les[i], truth[i]) >= 0.75
    else:  # not sought: NaN, said so
        assert not les.any() and an.table["lesion_image_area_mm2"].isna().all()
    qc = anatomy_qc(an, store)
    assert qc["qc_pass"].all(), qc["qc_reason"].tolist()
