"""Tests of the realism check on a tiny synthetic cohort."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from hypo.cohort import layout
from hypo.cohort.realism import TARGETS, main, realism_report
from hypo.cohort.synthetic import SynthParams, generate_cohort

TINY = SynthParams(
    matrix_choices=(96,),
    slice_thickness_mm_choices=(5.0, 6.0),
    slice_thickness_weights=(0.5, 0.5),
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("realism")
    generate_cohort(root, 6, 20230511, params=TINY, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def report(cohort):
    return realism_report(cohort)


def test_report_has_every_quantity_with_a_citation(report):
    assert list(report["quantity"]) == list(TARGETS)
    assert set(report.columns) >= {
        "quantity",
        "value",
        "target_low",
        "target_high",
        "citation",
        "status",
    }
    assert (report["citation"].str.len() > 10).all()
    assert set(report["status"]) <= {"OK", "FAIL"}


def test_image_contrast_of_a_tiny_cohort_is_realistic(report):
    r = report.set_index("quantity")
    # Per-patient intensity ratios are precise even for 6 patients: check the point values.
    for q in ("gm_wm_ratio", "csf_wm_ratio", "lesion_tissue_ratio"):
        lo, hi = TARGETS[q][:2]
        assert lo <= r.loc[q, "value"] <= hi, (q, r.loc[q, "value"])
    assert (
        21
        <= r.loc["slices_per_patient_min", "value"]
        <= r.loc["slices_per_patient_max", "value"]
        <= 46
    )
    assert r.loc["tia_lesion_slice_share", "value"] == 0
    # With tiny n the CI-overlap rule is tolerant: everything passes on a sound cohort.
    assert (report["status"] == "OK").all(), report[report["status"] != "OK"]


def test_exit_status_and_failures_on_a_broken_cohort(cohort, tmp_path, capsys):
    assert main([str(cohort)]) == 0
    out = capsys.readouterr().out
    assert "gm_wm_ratio" in out and "FAIL" not in out.split("\n")[1]
    broken = tmp_path / "broken"
    shutil.copytree(cohort, broken)
    part = pd.read_csv(broken / layout.PARTICIPANTS, sep="\t", dtype=str, keep_default_na=False)
    part["age"] = "25"  # a cohort of young adults cannot have median age 71
    part.to_csv(broken / layout.PARTICIPANTS, sep="\t", index=False)
    assert main([str(broken)]) == 1
    r = realism_report(broken).set_index("quantity")
    assert r.loc["age_median", "status"] == "FAIL"
    assert r.loc["age_median", "value"] == 25
    assert main([str(tmp_path / "nowhere")]) == 2


def test_ci_rule_tightens_with_sample_size():
    from hypo.cohort.realism import _quantile_ci
    from hypo.intervals import wilson_ci as _wilson

    small = _wilson(3, 6)
    big = _wilson(300, 600)
    assert small[1] - small[0] > big[1] - big[0] > 0
    x = np.random.default_rng(0).normal(size=1000)
    est, lo, hi = _quantile_ci(x, 0.5)
    assert lo < est < hi and hi - lo < 0.3
