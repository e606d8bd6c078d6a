"""The falsification harness: outcome redraws, the fast ordinal fit, replicates and the
``python -m analyses.calibration --quick`` run on a fake synthetic cohort (tables only)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from hypo._util import rng_for
from hypo.cohort.layout import side_right
from hypo.cohort.synthetic import SynthParams, clinical
from hypo.intervals import wilson_ci
from hypo.stats import calibration as cal

N = 160


def _cohort_tables(n=N, seed=3):
    """participants + truth tables drawn like the generator's (no images)."""
    p = SynthParams()
    rng = np.random.default_rng(seed)
    part, truth = [], []
    for i in range(n):
        demo = clinical.draw_demographics(rng, p)
        demo["group"] = "stroke"
        plan = clinical.draw_lesion_plan(rng, p, "stroke")
        vol = float(np.exp(rng.normal(2.5, 1.2)))
        sw = float(rng.standard_normal())
        course = clinical.draw_clinical_course(rng, p, demo, plan, vol, sw, "default")
        pid = f"sub-{i + 1:03d}"
        part.append({"participant_id": pid, **{k: demo[k] for k in ("age", "sex", "group",
                     "mrs_before")}, **{k: course[k] for k in ("nihss_baseline", "ivt", "iat",
                     "mrs_3months")}})  # fmt: skip
        truth.append({"participant_id": pid, "true_lesion": 1, "territory": plan["territory"],
                      "side": plan["side"], "lesion_volume_ml": vol * 1.05,
                      "true_tissue_volume_ml": vol, "swelling": sw,
                      "outcome_linear_predictor": course["outcome_linear_predictor"]})  # fmt: skip
    return pd.DataFrame(part), pd.DataFrame(truth), p


def test_linear_predictor_matches_the_generators_per_patient_draw():
    part, truth, p = _cohort_tables(60)
    covs = cal.outcome_covariates(part, truth)
    eta = clinical.outcome_linear_predictor(covs, p, "default")
    want = truth["outcome_linear_predictor"].to_numpy() - np.log(1.5) * truth["swelling"]
    np.testing.assert_allclose(eta, want, atol=1e-9)
    # The null mode drops every image-dependent term: volume and NIHSS do not move eta.
    moved = covs.assign(true_tissue_volume_ml=covs["true_tissue_volume_ml"] * 10,
                        nihss_baseline=covs["nihss_baseline"] + 10)  # fmt: skip
    np.testing.assert_allclose(clinical.outcome_linear_predictor(moved, p, "null"),
                               clinical.outcome_linear_predictor(covs, p, "null"))  # fmt: skip
    assert not np.allclose(clinical.outcome_linear_predictor(moved, p, "conditional_null"),
                           clinical.outcome_linear_predictor(covs, p, "conditional_null"))  # fmt: skip


def test_redraw_is_seeded_keeps_missing_and_plants_the_effect():
    part, truth, p = _cohort_tables(400)
    covs = cal.outcome_covariates(part, truth)
    miss = np.zeros(len(covs), bool)
    miss[:7] = True
    a = cal.redraw_mrs(covs, "default", rng_for(1, "s", 0), p, 1.5, miss)
    b = cal.redraw_mrs(covs, "default", rng_for(1, "s", 0), p, 1.5, miss)
    c = cal.redraw_mrs(covs, "default", rng_for(1, "s", 1), p, 1.5, miss)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.isnan(a[:7]).all() and set(np.unique(a[7:])) <= set(range(7))
    # A big planted OR pushes high-swelling patients to worse grades, the null does not.
    sw = covs["swelling"].to_numpy()
    big = cal.redraw_mrs(covs, "default", rng_for(2), p, 20.0)
    null = cal.redraw_mrs(covs, "null", rng_for(2), p)
    assert big[sw > 0.5].mean() - big[sw < -0.5].mean() > 1.5
    assert abs(null[sw > 0.5].mean() - null[sw < -0.5].mean()) < 0.5
    with pytest.raises(ValueError, match="needs mode 'default'"):
        cal.redraw_mrs(covs, "null", rng_for(2), p, 1.5)


def test_fast_fit_agrees_with_the_projects_ordinal_fit():
    from hypo.stats.outcomes import fit_outcome

    part, truth, p = _cohort_tables(N)
    covs = cal.outcome_covariates(part, truth)
    spec = cal.oracle_spec(covs)
    y = cal.redraw_mrs(covs, "default", rng_for(4), p, 1.5)
    fit = cal.fit_cumulative_logit(y[spec.rows].astype(int), spec.X)
    cols = [f"x{j}" for j in range(len(spec.terms))]
    d = pd.DataFrame(spec.X, columns=cols).assign(y=y[spec.rows])
    ref = fit_outcome(d, " + ".join(cols), "y")
    assert fit.converged
    np.testing.assert_allclose(fit.estimate, ref["estimate"], atol=1e-4)
    np.testing.assert_allclose(fit.se, ref["se"], rtol=1e-3)
    np.testing.assert_allclose(fit.p, ref["p"], atol=1e-4)
    # A single outcome level cannot be fitted, and says so.
    bad = cal.fit_cumulative_logit(np.zeros(20, int), spec.X[:20])
    assert not bad.converged and "single" in bad.error


def test_null_band_and_wilson():
    lo, hi = cal.null_band(1000, 0.05)
    assert (lo, hi) == (0.037, 0.064)
    wl, wh = wilson_ci(50, 1000)
    assert wl < 0.05 < wh and 0.03 < wl and wh < 0.07


def _features_table(part, truth, rng):
    """A main-analysis-like table: one registered feature carries swelling, the rest noise."""
    from hypo.stats.registry import Registry
    from hypo.study.config import HYPOTHESES_DIR

    reg = Registry.load(HYPOTHESES_DIR)
    t = part.merge(truth, on="participant_id")
    d = t[["participant_id", "group", "age", "mrs_before", "nihss_baseline", "ivt", "iat",
           "mrs_3months"]].copy()  # fmt: skip
    d["any_lesion_visible"] = 1
    d["has_features"] = True
    d["in_model_training"] = False
    d["log_lesion_volume_ml"] = np.log1p(t["lesion_volume_ml"])
    d["lesion_side_right"] = side_right(t["side"])
    for h in reg.hypotheses.values():
        col = f"{h.model}__{h.feature}__cam"
        noise = rng.normal(size=len(d))
        d[col] = t["swelling"] + 0.3 * noise if h.id == "H1_stroke" else noise
    d.loc[:4, "mrs_3months"] = np.nan  # the cohort's missing outcomes stay missing
    return d, reg


def _write_cohort(cohort, part, truth, p):
    """A folder a synthetic cohort's truth is read from (participants, truth, generator)."""
    (cohort / "derivatives" / "truth").mkdir(parents=True)
    part.to_csv(cohort / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    truth.to_csv(cohort / "derivatives" / "truth" / "truth.tsv", sep="\t", index=False)
    (cohort / "generator.json").write_text(json.dumps({"mode": "default", "hash": "x",
                                                       "params": p.to_dict()}))  # fmt: skip
    return cohort


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from analyses import calibration as ac

    root = tmp_path_factory.mktemp("calibration")
    part, truth, p = _cohort_tables(N)
    cohort = _write_cohort(root / "cohort", part, truth, p)
    feats, reg = _features_table(part, truth, np.random.default_rng(5))
    fpath = root / "features.csv"
    feats.to_csv(fpath, index=False)
    out = root / "out"
    argv = ["--quick", "--cohort", str(cohort), "--features", str(fpath), "--out", str(out),
            "--replicates", "0", "--no-leakage", "--workers", "2", "--chunk", "25", "--quiet"]  # fmt: skip
    rc = ac.main(argv)
    return {"rc": rc, "out": out, "argv": argv, "feats": feats, "reg": reg, "cohort": cohort,
            "part": part, "truth": truth, "params": p}  # fmt: skip


def test_quick_run_writes_tables_report_and_targets(quick):
    out = quick["out"]
    assert quick["rc"] == 0
    for f in ("rejection_rates.csv", "family_rates.csv", "truth_summary.csv",
              "power_by_size.csv", "report.md", "report.html", "provenance.json"):  # fmt: skip
        assert (out / f).is_file(), f
    rr = pd.read_csv(out / "rejection_rates.csv")
    n_hyp = len(quick["reg"].hypotheses)
    for s in cal.SETTINGS:
        sub = rr[rr["setting"] == s.name]
        # every hypothesis, its sensitivity model (the table has its covariates), the two
        # oracle terms
        assert len(sub) == 2 * n_hyp + 2, s.name
        assert (sub["n_replicates"] == 50).all()
    assert rr["rejection_rate"].between(0, 1).all()
    assert (rr["mc_low"] <= rr["rejection_rate"] + 1e-12).all()
    assert (rr["rejection_rate"] <= rr["mc_high"] + 1e-12).all()
    # The band applies where the coefficient is truly 0: every registered test under the
    # nulls, the oracle's volume term in the complete null only.
    band = rr.set_index(["setting", "hypothesis", "term"])["within_null_band"]
    assert band.loc["complete_null", "truth", "log_lesion_volume_ml_plus_1"] in (True, False)
    assert pd.isna(band.loc["conditional_null", "truth", "log_lesion_volume_ml_plus_1"])
    assert pd.isna(band.loc["planted_effect", "H1_stroke", "stroke__asymmetry_ipsi_contra__cam"])
    # Known answers: the swelling-carrying feature is found when the effect is planted
    # (OR 1.5 per SD, n ~ 155: well above alpha), never called significant more than
    # chance allows under the complete null.
    get = rr[rr["hypothesis"] != "truth"].set_index(["setting", "hypothesis"])["rejection_rate"]
    assert get["planted_effect", "H1_stroke"] > 0.4
    assert get["complete_null", "H1_stroke"] < 0.2
    md = (out / "report.md").read_text()
    assert "synthetic" in md and "Targets" in md and "type-I" in md


def test_truth_summary_coverage_and_bias(quick):
    ts = pd.read_csv(quick["out"] / "truth_summary.csv")
    sw = ts[ts["term"] == "swelling"].set_index("setting")
    assert np.isclose(sw.loc["planted_effect", "true_value"], np.log(1.5))
    assert sw.loc["complete_null", "true_value"] == 0
    assert np.isnan(sw.loc["non_proportional_odds", "true_value"])  # undefined: no coverage
    assert np.isnan(sw.loc["non_proportional_odds", "coverage"])
    assert sw.loc["planted_effect", "coverage"] >= 0.8
    assert abs(sw.loc["planted_effect", "bias"]) < 0.15
    # The model SE is an honest estimate of the spread of estimates.
    ratio = sw["mean_model_se"] / sw["empirical_se"]
    assert ratio.between(0.6, 1.6).all()


def test_resume_equals_uninterrupted_and_workers_do_not_matter(quick, tmp_path):
    reps_dir = quick["out"] / "replicates"
    full = pd.concat([pd.read_parquet(f) for f in sorted(reps_dir.rglob("*.parquet"))])
    # Delete one chunk and rerun in one process: only it is recomputed, with equal numbers.
    (folder,) = reps_dir.glob("conditional_null-*")  # one folder per setting and input key
    victim = sorted(folder.glob("*.parquet"))[0]
    before = pd.read_parquet(victim)
    others = {f: f.stat().st_mtime_ns for f in reps_dir.rglob("*.parquet") if f != victim}
    victim.unlink()
    from analyses import calibration as ac

    argv = [a for a in quick["argv"]]
    argv[argv.index("--workers") + 1] = "1"
    assert ac.main(argv) == 0
    after = pd.read_parquet(victim)
    pd.testing.assert_frame_equal(before, after)
    assert all(f.stat().st_mtime_ns == t for f, t in others.items())
    assert len(full) == len(pd.concat([pd.read_parquet(f) for f in reps_dir.rglob("*.parquet")]))


def test_replicate_key_changes_with_inputs_not_with_workers():
    import dataclasses

    from hypo.stats import calibration as cal

    X = np.arange(6.0).reshape(3, 2)
    spec = cal.FitSpec("H", "f", ("a", "b"), ("a",), X, np.arange(3))
    cov = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    c1 = cal.CalibrationConfig(n_replicates=10, workers=1)
    key = cal.replicate_key(cov, [spec], c1)
    # More replicates extend the same chunks; the pool size changes no number.
    more = dataclasses.replace(c1, workers=4, n_replicates=50)
    assert cal.replicate_key(cov, [spec], more) == key
    assert cal.replicate_key(cov.assign(x=[1.0, 2.0, 4.0]), [spec], c1) != key
    assert cal.replicate_key(cov, [spec], dataclasses.replace(c1, chunk=c1.chunk + 1)) != key
    assert cal.replicate_key(cov, [dataclasses.replace(spec, X=X + 1)], c1) != key


def test_family_rates_and_bh(quick):
    fr = pd.read_csv(quick["out"] / "family_rates.csv")
    fams = set(quick["reg"].families)
    assert set(fr["family"]) == fams | {f"{f}_sensitivity" for f in fams}
    # BH never rejects more often than the uncorrected family-wise count.
    assert (fr["any_bh_rejection"] <= fr["fwer_uncorrected"] + 1e-12).all()
    assert fr.loc[fr["role"] == "type_I", "fdr"].notna().all()


def test_replicates_match_the_registered_test_on_one_draw(quick):
    """The fast path refits exactly what the registry's runner fits."""
    from hypo.stats.registry import test_hypotheses
    from hypo.study.calibration import candidate_rows
    from hypo.study.config import LOCK_FILE

    rows, missing = candidate_rows(quick["feats"], "features")
    covs = cal.outcome_covariates(quick["part"], quick["truth"]).loc[rows["participant_id"]]
    specs = cal.prepare_fits(rows, quick["reg"], lambda h: f"{h.model}__{h.feature}__cam",
                             truth=covs)  # fmt: skip
    y = cal.redraw_mrs(covs, "conditional_null", rng_for(9), quick["params"], None, missing)
    fast = pd.DataFrame(cal.run_replicate(y, specs, 0.05)).set_index("hypothesis")
    data = rows.assign(mrs_3months=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failed fits count as p = 1, with a warning
        ref = test_hypotheses(data, quick["reg"], LOCK_FILE,
                              column_for=lambda h: f"{h.model}__{h.feature}__cam")  # fmt: skip
    ref = ref.set_index("hypothesis")
    for hid in ref.index:
        assert fast.loc[hid, "n"] == ref.loc[hid, "n"]
        np.testing.assert_allclose(fast.loc[hid, "estimate"], ref.loc[hid, "estimate"], atol=1e-4)
        np.testing.assert_allclose(fast.loc[hid, "p"], ref.loc[hid, "p"], atol=1e-4)
        np.testing.assert_allclose(fast.loc[hid, "q"], ref.loc[hid, "q"], atol=1e-4)


def test_refuses_a_cohort_without_truth(quick, tmp_path, capsys):
    from analyses import calibration as ac

    argv = [a for a in quick["argv"]]
    argv[argv.index("--cohort") + 1] = str(tmp_path)
    assert ac.main(argv) == 2
    assert "truth" in capsys.readouterr().err
