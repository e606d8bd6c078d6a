"""The main analysis end to end on a small synthetic cohort with tiny 64 px models.

One ``--quick`` run (module fixture) feeds the output checks; the refusals (changed
registry, leakage, missing model) and the synthetic-truth coverage are tested on their own.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from analyses import asymmetry_vs_mrs as av
from hypo._util import file_hash
from hypo.cohort.layout import SIDE_CODE
from hypo.stats.multiplicity import bh_qvalues
from hypo.study.config import HYPOTHESES_DIR, LOCK_FILE, StudyError
from hypo.study.oracle import truth_rows
from hypo.study.table import wide_column
from tests.browser import check_page, close_browser, open_browser
from tests.helpers import isolate_hypo, tiny_model

N_PATIENTS = 26
SECRET = "Jane Q. Doe"
REQUIRED = ["hypothesis", "model", "feature", "term", "estimate", "se", "OR", "OR_low",
            "OR_high", "p", "q", "n", "direction"]  # fmt: skip
SOURCES = ("cam", "control_uniform", "control_intensity")


def _tiny_model(arch: str, classes, out: Path, cohort_id: str, train, val) -> Path:
    """A 64 px model of the shipped architecture, fitted one epoch on noise, with a card."""
    return tiny_model(arch, classes, out, {"id": cohort_id, "generator_hash": "synthetic"},
                      train, val)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Generate a small cohort (one DWI header carrying a name), two tiny models and run
    ``main([... --quick ...])`` once."""
    from hypo.cohort.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("main_analysis")
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, root)
        cohort = root / "data" / "cohort"
        generate_cohort(cohort, n_patients=N_PATIENTS, seed=20230901, workers=2, progress=False)
        dwi = cohort / "sub-001" / "dwi" / "sub-001_dwi.nii.gz"
        img = nib.load(dwi)
        img = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
        img.header["descrip"] = SECRET.encode()
        nib.save(img, dwi)
        # Same participant ids as the analysed cohort, but another cohort: not leakage.
        models = {
            "stroke": _tiny_model("gap", ("no stroke", "stroke"), root / "m" / "stroke",
                                  "dev-elsewhere", ["sub-001", "sub-002"], ["sub-003"]),
            "mrs": _tiny_model("mrs", ("no stroke", "mRS 0-2", "mRS 3-6"), root / "m" / "mrs",
                               "dev-elsewhere", ["sub-001"], ["sub-004"]),
        }  # fmt: skip
        out = root / "out"
        argv = ["--quick", "--cohort", str(cohort), "--stroke-model", str(models["stroke"]),
                "--mrs-model", str(models["mrs"]), "--no-outcome-model", "--out", str(out),
                "--quiet"]  # fmt: skip
        rc = av.main(argv)
        yield {"rc": rc, "out": out, "cohort": cohort, "models": models, "argv": argv, "mp": mp}


def test_run_writes_every_output(run):
    assert run["rc"] == 0
    out = run["out"]
    for f in ("results.csv", "features.csv", "report.md", "report.html", "provenance.json",
              "secondary.md", "secondary.html", "figures/forest_plot.png",
              "figures/cam_panels.png", "secondary_bootstrap.csv", "secondary_po_checks.csv"):  # fmt: skip
        assert (out / f).is_file(), f
    feats = pd.read_csv(out / "features.csv")
    assert len(feats) == N_PATIENTS and feats["participant_id"].is_unique
    pop = feats[feats["analysis_population"]]
    assert (pop["group"] == "stroke").all() and pop["mrs_3months"].notna().all()
    assert not feats["in_model_training"].any()


def test_results_one_row_per_registered_test_with_q_within_family(run):
    from hypo.stats.registry import Registry

    res = pd.read_csv(run["out"] / "results.csv")
    assert res.columns[: len(REQUIRED)].tolist() == REQUIRED
    # The quick run leaves the outcome model out (--no-outcome-model): its hypotheses are
    # not tested, and the report says so.
    reg = Registry.load(HYPOTHESES_DIR).without_models(["outcome"])
    assert "H1_outcome" in Registry.load(HYPOTHESES_DIR).hypotheses
    assert "outcome" not in set(res["model"])
    assert "H1_outcome" in (run["out"] / "report.md").read_text()
    tests = res[res["hypothesis"] != "truth"]
    for h in reg.hypotheses.values():
        for src in SOURCES:
            rows = tests[(tests["hypothesis"] == h.id) & (tests["map_source"] == src)]
            want = {"primary", "sensitivity"} if src == "cam" else {"primary"}
            assert set(rows["analysis"]) == want, (h.id, src)
            assert (rows["model"] == h.model).all() and (rows["feature"] == h.feature).all()
    assert len(tests) == len(reg.hypotheses) * (len(SOURCES) + 1)
    for _, g in tests.groupby(["family", "analysis", "map_source"]):
        assert g["hypothesis"].nunique() == 4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failed fits count as p = 1, with a warning
            q = bh_qvalues(g["p"].to_numpy(float))
        np.testing.assert_allclose(g["q"], q, equal_nan=True)
    ok = tests["OR"].notna()
    assert ok.any()
    np.testing.assert_allclose(tests.loc[ok, "OR"], np.exp(tests.loc[ok, "estimate"]))
    assert tests.loc[ok, "direction"].str.contains("OR > 1 means worse").all()
    # The CAM features get no coverage; the truth rows carry the generator's values.
    assert tests["true_value"].isna().all() and tests["covered"].isna().all()
    truth = res[res["hypothesis"] == "truth"]
    assert len(truth) >= 1 and truth["true_value"].notna().any()
    assert np.isclose(truth.loc[truth["term"] == "swelling", "true_value"].iloc[0], np.log(1.5))


def test_report_escapes_and_names_patients_by_id_only(run):
    out = run["out"]
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "<script" not in html
    assert "Maps used" in md and "artefacts" in md
    excluded = [p for p in pd.read_csv(out / "features.csv").query("group != 'stroke'")[
        "participant_id"]]  # fmt: skip
    assert excluded and all(p in html for p in excluded)
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".md", ".html", ".json", ".csv"):
            assert SECRET not in f.read_text(errors="replace"), f


def test_provenance_records_hashes_seeds_and_config(run):
    prov = json.loads((run["out"] / "provenance.json").read_text())
    lock = json.loads(LOCK_FILE.read_text())
    assert prov["registry"]["registry_sha256"] == lock["registry_sha256"]
    for k in ("stroke", "mrs"):
        want = file_hash(run["models"][k] / "model.keras")
        assert prov["models"][k]["model_keras_sha256"] == want
    assert prov["cohort"]["content_hash"] and prov["cohort"]["participants_sha256"]
    assert prov["seeds"]["bootstrap"] == 0 and prov["config"]["quick"] is True
    assert prov["config"]["n_boot"] == 20 and prov["versions"]["statsmodels"]


def test_changed_hypothesis_is_refused(run, tmp_path, capsys):
    hyp = tmp_path / "hypotheses"
    shutil.copytree(HYPOTHESES_DIR, hyp)
    f = hyp / "H2_mrs.toml"
    f.write_text(f.read_text().replace('feature_form = "zscore"', 'feature_form = "raw"'))
    out = tmp_path / "out"
    rc = av.main([*run["argv"][:-3], "--out", str(out), "--hypotheses", str(hyp), "--quiet"])
    assert rc == 2
    assert "changed: H2_mrs" in capsys.readouterr().err
    assert not (out / "results.csv").exists()


def test_training_patient_of_the_analysed_cohort_is_refused(run, tmp_path, capsys):
    from hypo.cohort import load

    cohort_id = load(run["cohort"]).cohort_id
    bad = tmp_path / "stroke"
    shutil.copytree(run["models"]["stroke"], bad)
    card = json.loads((bad / "card.json").read_text())
    card["cohort"]["id"] = cohort_id
    card["train_patients"] = ["sub-005"]
    (bad / "card.json").write_text(json.dumps(card))
    argv = list(run["argv"])
    argv[argv.index("--stroke-model") + 1] = str(bad)
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    assert av.main(argv) == 2
    err = capsys.readouterr().err
    assert "sub-005" in err and "trained or validated" in err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_missing_model_names_the_training_command(tmp_path, capsys):
    rc = av.main(["--quick", "--stroke-model", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert rc == 2
    assert "python -m analyses.train_models --model gap" in capsys.readouterr().err


def test_truth_fit_recovers_the_generator_coefficients(tmp_path):
    """Outcomes drawn from the documented outcome model: the oracle fit's CIs cover it."""
    from types import SimpleNamespace

    from hypo.cohort import layout

    rng = np.random.default_rng(7)
    n = 1500
    coef = {"age_per_decade_above_70": 0.35, "mrs_before": 0.55, "female": 0.1,
            "log_lesion_volume_ml_plus_1": 0.25, "right_side": 0.15, "nihss_baseline": 0.13,
            "ivt": -0.3, "iat": -0.5, "territory": {"MCA": 0.0, "ACA": 0.1, "PCA": -0.1},
            "swelling_per_sd_by_cut": [np.log(1.5)] * 6, "proportional_odds": True,
            "theta": [0.8, 1.7, 2.6, 3.5, 4.6, 5.6]}  # fmt: skip
    age = rng.uniform(40, 95, n)
    pre = rng.choice(4, n, p=[0.7, 0.15, 0.1, 0.05])
    sex = rng.choice(["F", "M"], n)
    vol = rng.lognormal(2.5, 1.2, n)
    side = rng.choice(["left", "right", "bilateral"], n, p=[0.45, 0.45, 0.1])
    terr = rng.choice(["MCA", "ACA", "PCA+MCA"], n, p=[0.6, 0.2, 0.2])
    nihss = rng.poisson(6, n)
    ivt, iat = rng.integers(0, 2, n), rng.integers(0, 2, n)
    swell = rng.normal(size=n)
    right = pd.Series(side).map(SIDE_CODE).to_numpy()
    eta = (0.35 * (age - 70) / 10 + 0.55 * pre + 0.1 * (sex == "F") + 0.25 * np.log1p(vol)
           + 0.15 * right + pd.Series(terr).str[:3].map(coef["territory"]).to_numpy()
           + 0.13 * nihss - 0.3 * ivt - 0.5 * iat + np.log(1.5) * swell)  # fmt: skip
    cum = 1 / (1 + np.exp(-(np.asarray(coef["theta"])[None, :] - eta[:, None])))
    mrs = (rng.random(n)[:, None] > cum).sum(axis=1)
    pid = [f"sub-{i:04d}" for i in range(n)]
    (tmp_path / layout.TRUTH_DIR).mkdir(parents=True)
    pd.DataFrame({"participant_id": pid, "swelling": swell, "true_tissue_volume_ml": vol,
                  "territory": terr, "side": side}).to_csv(
        tmp_path / layout.TRUTH_TABLE, sep="\t", index=False)  # fmt: skip
    (tmp_path / layout.GENERATOR).write_text(json.dumps({"outcome_model": {"coefficients": coef}}))
    data = pd.DataFrame({"participant_id": pid, "age": age, "mrs_before": pre, "sex": sex,
                         "nihss_baseline": nihss, "ivt": ivt, "iat": iat, "mrs_3months": mrs})  # fmt: skip
    rows = truth_rows(data, SimpleNamespace(root=tmp_path)).set_index("term")
    assert (rows["error"] == "").all()
    assert np.isclose(rows.loc["swelling", "true_value"], np.log(1.5))
    assert np.isclose(rows.loc["territory_PCA_vs_MCA", "true_value"], -0.1)
    z = (rows["estimate"] - rows["true_value"]) / rows["se"]
    assert (z.abs() < 4).all(), z
    assert rows["covered"].astype(bool).sum() >= len(rows) - 2
    # A wrong truth is not covered: the check can fail.
    assert not (abs(rows.loc["swelling", "estimate"] - 0.0) < 1.96 * rows.loc["swelling", "se"])


def test_wide_column_matches_the_feature_join_naming():
    assert wide_column("asymmetry_ipsi_contra", "lesion_slices_map_mass_weighted_mean", "cam",
                          "gradcam", "block5_relu", 2) == (
        "asymmetry_ipsi_contra_lesion__cam_gradcam_block5_relu_c2")  # fmt: skip
    with pytest.raises(StudyError, match="aggregation"):
        wide_column("x", "median", "cam", "gradcam", "l", 1)


def test_own_cohort_warns_when_models_were_trained_on_synthetic_data(run, tmp_path, capsys):
    from tests.helpers import make_tiny_cohort

    cohort = make_tiny_cohort(tmp_path, n_patients=6, slice_labels=True)
    argv = list(run["argv"])
    argv[argv.index("--cohort") + 1] = str(cohort)
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    # The toy volumes hold no brain-sized head: the anatomy QC refuses them, loudly ...
    assert av.main(argv) == 2
    err = capsys.readouterr().err
    assert "anatomy QC failed for 6 of 6 patients" in err and "no brain found" in err
    # ... and told to go on, the patient flow leaves every failed patient out, counted,
    # and nothing that looks like a result is written; the warning came first.
    assert av.main(argv + ["--max-qc-fail-fraction", "1"]) == 2
    err = capsys.readouterr().err
    assert "trained on a synthetic cohort" in err
    assert "no patient of" in err and "Anatomy QC passed: 0" in err
    assert not (tmp_path / "out").exists()


def test_reports_read_well_in_a_real_browser(run):
    """report.html and secondary.html in headless Chromium at 1280 px (tests/browser.py).

    Screenshots go to ``$HYPO_SCREENSHOTS`` when set (to keep them), else beside the run.
    """
    drv = open_browser()
    shots = Path(os.environ.get("HYPO_SCREENSHOTS") or run["out"].parent / "screenshots")
    try:
        pages = {p: check_page(drv, run["out"] / f"{p}.html", shots / f"{p}.png")
                 for p in ("report", "secondary")}  # fmt: skip
    finally:
        close_browser(drv)
    for name, res in pages.items():
        assert res.problems == [], (name, res.problems)
        assert res.tables and all(t["rows"] > 0 for t in res.tables), name
        assert res.screenshot.stat().st_size > 10_000, name
    report = pages["report"]
    assert len(report.images) >= 3  # forest plot, Grotta bars, feature-by-mRS, CAM panels
    results = [t for t in report.tables if t["caption"].startswith("Registered hypotheses")]
    assert len(results) == 1
    # The results table leads with what a reader scans and fits 1280 px without scrolling.
    assert results[0]["headers"][:6] == ["hypothesis", "feature", "map source", "OR [95% CI]",
                                         "p", "q"]  # fmt: skip
    assert not results[0]["scrolls"]
    # The excluded patients are a folded list, not a page of ids before the results.
    excluded = [t for t in report.tables if t["caption"].startswith("Excluded patients")]
    assert len(excluded) == 1 and excluded[0]["folded"]
    secondary = pages["secondary"]
    assert any(t["caption"].startswith("Partial proportional odds") for t in secondary.tables) or (
        "no partial fit was needed" in (run["out"] / "secondary.md").read_text()
    )
