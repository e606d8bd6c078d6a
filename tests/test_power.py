"""Positive controls (issue 17): the power study finds a planted effect through a feature
that measures it, not through features that do not, holds the nulls, and runs the same on a
process pool and a dask cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hypo.study import power as pw
from tests.test_calibration import _cohort_tables, _features_table, _write_cohort

N = 160


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("power")
    part, truth, p = _cohort_tables(N, seed=11)
    cohort = _write_cohort(root / "cohort", part, truth, p)
    feats, reg = _features_table(part, truth, np.random.default_rng(5))
    rng = np.random.default_rng(7)
    sw = part[["participant_id"]].merge(truth, on="participant_id")["swelling"].to_numpy()
    feats["sulcal_effacement"] = sw + 0.5 * rng.normal(size=len(sw))  # sees swelling
    feats["ventricle_compression"] = rng.normal(size=len(sw))  # sees nothing
    fpath = root / "features.csv"
    feats.to_csv(fpath, index=False)
    settings = pw.PowerSettings(features=fpath, out=root / "out", registry=reg.folder,
                                cohort=cohort, effects=[1.25, 3.0], n_null=60, n_power=40,
                                chunk=20, workers=1)  # fmt: skip
    res = pw.run_power(settings)
    return {"res": res, "settings": settings, "feats": feats, "cohort": cohort, "root": root}


def _row(power, h, cond):
    r = power[(power["hypothesis"] == h) & (power["condition"] == cond)]
    assert len(r) == 1, (h, cond)
    return r.iloc[0]


def test_planted_effect_is_found_where_the_feature_measures_it(study):
    power = study["res"].tables["power"]
    # H1_stroke's feature is swelling + noise (see _features_table); the others are noise.
    assert _row(power, "H1_stroke", "or_3")["power"] >= 0.7
    assert _row(power, "H1_stroke", "or_3")["power"] > _row(power, "H1_stroke", "or_1.25")["power"]
    assert _row(power, "truth", "or_3")["power"] >= 0.9
    assert _row(power, "image:sulcal_effacement", "or_3")["power"] >= 0.5
    assert _row(power, "image:ventricle_compression", "or_3")["power"] <= 0.3
    noise = power[(power["condition"] == "or_3") & (power["kind"] == "registered")
                  & (power["hypothesis"].isin(["H2_mrs", "H3_mrs", "H4_mrs"]))]  # fmt: skip
    assert (noise["power"] <= 0.3).all()
    # BH-q power is never above p power, and the MC interval holds the estimate.
    assert (power["power_q"].fillna(0) <= power["power"] + 1e-12).all()
    assert ((power["mc_low"] <= power["power"]) & (power["power"] <= power["mc_high"])).all()


def test_nulls_hold_and_type_one_table_judges_them(study):
    t1 = study["res"].tables["type_I"]
    assert set(t1["condition"]) == {"complete_null", "conditional_null"}
    prim = t1[(t1["analysis"] == "primary") & (t1["kind"] == "registered")]
    comp = prim[prim["condition"] == "complete_null"]
    assert (comp["type_I_error"] <= 0.2).all()
    assert t1["n_replicates"].min() == 60
    ok = (t1["type_I_error"] <= pw.TYPE_I_MAX) & (t1["mc_high"] <= pw.TYPE_I_UPPER_MAX)
    assert (t1["meets_target"] == ok).all()


def test_partial_correlations_see_the_planted_feature(study):
    pc = study["res"].tables["partial_correlations"].set_index("feature")
    assert pc.loc["stroke__asymmetry_ipsi_contra__cam", "partial_r"] > 0.8
    assert abs(pc.loc["mrs__asymmetry_ipsi_contra__cam", "partial_r"]) < 0.3


def test_minimum_detectable_effect_interpolates_on_log_or():
    p = pd.DataFrame({"hypothesis": "h", "family": "f", "kind": "registered",
                      "condition": ["conditional_null", "or_2", "or_4"],
                      "effect_or": [1.0, 2.0, 4.0], "power": [0.05, 0.6, 1.0]})  # fmt: skip
    m = pw.minimum_detectable_effect(p).iloc[0]
    assert m["mde_or"] == pytest.approx(np.exp(np.log(2) + 0.5 * np.log(2)))
    p2 = p.assign(power=[0.05, 0.2, 0.5])
    m2 = pw.minimum_detectable_effect(p2).iloc[0]
    assert m2["beyond_grid"] and not np.isfinite(m2["mde_or"])


def test_shipped_table_and_the_main_reports_sentence(study, tmp_path):
    power = study["res"].tables["power"]
    path = pw.write_shipped(power, "vtest", tmp_path)
    t = pd.read_csv(path)
    for c in ("hypothesis", "effect_or", "power", "mc_low", "mc_high", "n_replicates"):
        assert c in t.columns
    reg_ids = set(pd.read_csv(study["settings"].features, nrows=0).columns)
    want = {h for h in (f"H{i}_{m}" for i in range(1, 5) for m in ("stroke", "mrs", "outcome"))
            if any(c.startswith(h.split("_")[1] + "__") for c in reg_ids)}  # fmt: skip
    assert set(t["hypothesis"]) == want and {"H1_stroke", "H1_mrs"} <= want
    note = pw.power_note(pw.read_shipped("vtest", tmp_path), "H1_stroke")
    assert note.startswith("a null here had power") and "at OR 3" in note
    assert pw.power_note(pw.read_shipped("missing", tmp_path), "H1_stroke").startswith(
        "power unknown"
    )
    assert pw.power_note(t, "H9_none").startswith("power unknown")


def test_conditions_refuse_an_effect_that_is_not_planted():
    with pytest.raises(pw.PowerError, match="must be > 1"):
        pw.conditions([1.0])
    names = [s.name for s in pw.conditions([1.5, 3])]
    assert names == ["complete_null", "conditional_null", "or_1.5", "or_3"]


def test_dask_cluster_gives_the_pools_numbers(study, tmp_path):
    pytest.importorskip("distributed")  # the optional extra hypo[cluster]; .ci/run installs it
    from hypo.stats import calibration as cal
    from hypo.stats.registry import Registry
    from hypo.study.calibration import read_cohort_truth

    s = study["settings"]
    feats = pd.read_csv(s.features, dtype={"participant_id": str})
    rows, missing = pw._candidate_rows(feats, "t")
    part, truth, params, _ = read_cohort_truth(s.cohort)
    covs = cal.outcome_covariates(part, truth).loc[rows["participant_id"].to_numpy()]
    specs = cal.prepare_fits(rows, Registry.load(s.registry),
                             lambda h: f"{h.model}__{h.feature}__cam")  # fmt: skip
    cfg = cal.CalibrationConfig(n_replicates=8, chunk=4, workers=2,
                                settings=(cal.Setting("or_3", "default", "power", 3.0),))  # fmt: skip
    pool = cal.run_replicates(tmp_path / "pool", covs, specs, cfg, missing, params, "process")
    dask = cal.run_replicates(tmp_path / "dask", covs, specs, cfg, missing, params, "dask")
    key = ["setting", "replicate", "hypothesis", "term"]
    pd.testing.assert_frame_equal(pool.sort_values(key).reset_index(drop=True),
                                  dask.sort_values(key).reset_index(drop=True))  # fmt: skip


def test_a_missing_engine_is_a_refusal_not_a_traceback(study, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("no distributed here")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    s = study["settings"]
    with pytest.raises(pw.PowerError, match=r"hypo\[cluster\]|\.\[cluster\]"):
        pw.run_power(pw.PowerSettings(**{**vars(s), "engine": "dask"}))


def test_map_sets_enter_as_a_nested_design_with_their_own_correlations(study, tmp_path):
    """A fake map source whose head 'learns' swelling only when the development outcomes
    carry it: its test gains power at OR 3, and the per-map-set partial correlations show
    the learning (the null sets do not track swelling)."""
    s = study["settings"]
    feats = study["feats"]
    from hypo.study.calibration import read_cohort_truth

    _, truth, _, _ = read_cohort_truth(s.cohort)
    sw = feats[["participant_id"]].merge(truth, on="participant_id")["swelling"].to_numpy()

    def features(cond, k):
        rng = np.random.default_rng([3, k, len(cond.name)])
        learned = 0.0 if cond.planted_or_per_sd is None else 1.0
        x = learned * sw + 0.4 * rng.normal(size=len(sw))
        return pd.DataFrame({"participant_id": feats["participant_id"], "fake_map": x,
                             "outcome_eta": x + 0.1 * rng.normal(size=len(sw))})  # fmt: skip

    ms = pw.MapSets(features, {"H1_outcome[fake@l]": ("fake_map", "outcome_maps[fake@l]")}, 2)
    res = pw.run_power(pw.PowerSettings(**{**vars(s), "out": tmp_path / "out", "effects": [3.0],
                                           "n_null": 40, "n_power": 40}), map_sets=ms)  # fmt: skip
    power = res.tables["power"]
    assert _row(power, "map:H1_outcome[fake@l]", "or_3")["power"] >= 0.6
    assert _row(power, "map:H1_outcome[fake@l]", "or_3")["n_replicates"] == 40
    pcs = res.tables["map_set_partial_correlations"].set_index(["feature", "condition"])
    assert set(pcs.index.get_level_values(0)) == {"fake_map", "outcome_eta"}
    assert (pcs["n_map_sets"] == 2).all()
    assert pcs.loc[("fake_map", "or_3"), "mean_partial_r"] > 0.7
    assert abs(pcs.loc[("fake_map", "complete_null"), "mean_partial_r"]) < 0.3
    assert len(pcs.loc[("outcome_eta", "or_3"), "partial_r_by_set"].split()) == 2


def test_the_main_reports_power_paragraph_lists_one_number_per_null_test(tmp_path, monkeypatch):
    from hypo.study import run

    table = pd.DataFrame({"hypothesis": ["H1_stroke", "H2_stroke", "H3_stroke"] * 2,
                          "effect_or": [1.5] * 3 + [3.0] * 3,
                          "power": [0.1, 0.05, 0.2, 0.3, 0.07, 0.6],
                          "n_replicates": [200] * 6})  # fmt: skip
    monkeypatch.setattr(pw, "read_shipped", lambda version, folder=None: table)
    res = pd.DataFrame({"hypothesis": ["H1_stroke", "H2_stroke", "H3_stroke", "H1_stroke"],
                        "map_source": ["cam", "cam", "cam", "control_uniform"],
                        "analysis": ["primary"] * 4, "q": [0.5, 0.01, 0.9, 0.5]})  # fmt: skip
    text = run.power_paragraph(res, "vtest")
    assert "a null here had power, at OR 3 per SD of swelling (200 replicates): " in text
    assert "H1_stroke 0.30, H3_stroke 0.60." in text and "H2_stroke" not in text  # q < 0.05
    assert res.loc[1, "power_note"].startswith("a null here had power 0.07 at OR 3")
    assert res.loc[3, "power_note"] == ""  # control maps get no note
    # Notes of different forms stay whole sentences.
    table.loc[5, "n_replicates"] = 100
    text = run.power_paragraph(res, "vtest")
    assert (
        "H3_stroke: a null here had power 0.60 at OR 3 per SD of swelling (100 replicates)" in text
    )
