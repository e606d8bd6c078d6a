"""The model experiments end to end (mrs_model, misclassified, mc_uncertainty).

One module fixture generates a small synthetic cohort in which half the TIA patients
carry a planted (reader-missed) lesion and one stroke patient has no 3-month mRS, fits
two tiny 64 px models one epoch on noise, and runs each experiment's ``main([... --quick
...])`` once. Known-answer checks of the helpers run on constructed data.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from analyses import mc_uncertainty as mc_uncertainty_cli
from analyses import misclassified as misclassified_cli
from analyses import mrs_model as mrs_model_cli
from hypo.cohort import load
from hypo.cohort.synthetic import generate_cohort
from hypo.cohort.synthetic.params import SynthParams
from hypo.nets.io import load_model
from hypo.nets.labels import mrs_labels
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.study.experiments import mc_uncertainty, misclassified, mrs_model
from tests.helpers import isolate_hypo, tiny_model

N_PATIENTS = 14


def _tiny_model(arch: str, classes, out: Path, images, train=(), val=()) -> Path:
    """A 64 px model of the shipped architecture, fitted one epoch on noise, with a card.

    The logits' biases are then shifted so that on ``images`` each class beats class 0 on
    about half the slices: a noise-fitted model would otherwise call every slice the same
    class, and the experiments' error and "called stroke" paths would never run.
    """

    def balance(model):
        head = model.get_layer("logits")
        z = keras.Model(model.input, head.output).predict(images, verbose=0)
        kernel, bias = head.get_weights()
        bias = bias - np.r_[0.0, np.median(z[:, 1:] - z[:, :1], axis=0)]
        head.set_weights([kernel, bias.astype(kernel.dtype)])

    return tiny_model(
        arch, classes, out, {"id": "dev-elsewhere", "generator_hash": "x"}, train, val, tune=balance
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Cohort (planted TIA lesions, one patient without mRS), tiny models, three runs."""

    root = tmp_path_factory.mktemp("experiments_models")
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, root)
        cohort = root / "data" / "cohort"
        params = SynthParams(tia_mislabelled_share=0.6, tia_mislabelled_volume_ml=(4.0, 8.0))
        generate_cohort(
            cohort, n_patients=N_PATIENTS, seed=20230901, params=params, workers=2, progress=False
        )
        parts = pd.read_csv(cohort / "participants.tsv", sep="\t", dtype=str)
        no_mrs = parts.loc[parts["group"] == "stroke", "participant_id"].iloc[0]
        parts.loc[parts["participant_id"] == no_mrs, "mrs_3months"] = "n/a"
        parts.to_csv(cohort / "participants.tsv", sep="\t", index=False)
        store = build_slice_store(load(cohort), PreprocessConfig(size=64), progress=False)
        images = np.asarray(store.images, dtype=np.float32)[..., None]
        models = {
            "stroke": _tiny_model(
                "gap",
                ("no stroke", "stroke"),
                root / "m" / "stroke",
                images,
                ["sub-001"],
                ["sub-002"],
            ),
            "mrs": _tiny_model(
                "mrs", ("no stroke", "mRS 0-2", "mRS 3-6"), root / "m" / "mrs", images
            ),
        }
        common = ["--quick", "--cohort", str(cohort), "--quiet"]
        outs, rcs = {}, {}
        for name, mod, model in (
            ("mrs_model", mrs_model_cli, models["mrs"]),
            ("misclassified", misclassified_cli, models["stroke"]),
            ("mc_uncertainty", mc_uncertainty_cli, models["stroke"]),
        ):
            outs[name] = root / "out" / name
            rcs[name] = mod.main([*common, "--model", str(model), "--out", str(outs[name])])
        yield {
            "root": root,
            "cohort": cohort,
            "models": models,
            "out": outs,
            "rc": rcs,
            "no_mrs": no_mrs,
            "store": store,
        }


def _common_outputs(out: Path, csvs) -> dict:
    for f in ("report.md", "report.html", "provenance.json", *[f"{c}.csv" for c in csvs]):
        assert (out / f).is_file(), f
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["quick"] is True and prov["cohort"]["content_hash"]
    md = (out / "report.md").read_text()
    assert "SYNTHETIC" in md and "Setting:" in md
    return prov


# --------------------------------------------------------------------------- mrs_model


def test_mrs_model_table3_counts_match_the_labels(env):

    assert env["rc"]["mrs_model"] == 0
    out = env["out"]["mrs_model"]
    _common_outputs(out, ["mrs_model", "table3", "confusion", "predictions", "panel_slices"])
    for m in mrs_model.PANEL_METHODS:
        assert (out / "figures" / f"cam_panels_{m}.png").stat().st_size > 10_000
    assert (out / "figures" / "class_accuracy.png").is_file()
    lab = mrs_labels(env["store"].table)
    parts = pd.read_csv(env["cohort"] / "participants.tsv", sep="\t")
    want = sorted(parts.loc[parts["mrs_3months"].isna(), "participant_id"])
    assert env["no_mrs"] in want and lab.excluded_patients == want
    res = pd.read_csv(out / "mrs_model.csv").set_index("metric")
    assert res.loc["accuracy", "n"] == len(lab.y)
    for k, c in enumerate(lab.classes):
        r = res.loc[f"sensitivity {c}"]
        assert r["n"] == (lab.y == k).sum()
        if r["n"]:
            assert r["wilson_low"] <= r["estimate"] <= r["wilson_high"]
            assert (
                r["boot_low"] <= r["estimate"] + 1e-12 and r["estimate"] <= r["boot_high"] + 1e-12
            )
    # Confusion matrix and predictions agree with the accuracy reported.
    conf = pd.read_csv(out / "confusion.csv")
    assert conf["slices"].sum() == len(lab.y)
    diag = conf[conf["true_class"] == conf["predicted_class"]]["slices"].sum()
    assert np.isclose(diag / len(lab.y), res.loc["accuracy", "estimate"])
    pred = pd.read_csv(out / "predictions.csv")
    assert env["no_mrs"] not in set(pred["participant_id"])
    probs = pred[[f"p_{c}" for c in lab.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    md = (out / "report.md").read_text()
    assert f"without a 3-month mRS left out: {len(want)} ({', '.join(want)})" in md


def test_mrs_model_panels_one_example_per_true_class(env):
    picks = pd.read_csv(env["out"]["mrs_model"] / "panel_slices.csv")
    pred = pd.read_csv(env["out"]["mrs_model"] / "predictions.csv")
    assert set(picks["true_class"]) == set(pred["true_class"])
    assert picks.groupby("true_class").size().eq(1).all()


def test_pick_panel_slices_is_seeded_and_takes_the_largest_lesion():
    rng = np.random.default_rng(1)
    rows = []
    for p in range(6):
        for s in range(10):
            y = 0 if s < 5 else 1 + (p % 2)
            rows.append(
                {
                    "row": len(rows),
                    "participant_id": f"p{p}",
                    "slice": s,
                    "y": y,
                    "lesion_area_mm2": 0.0 if y == 0 else float(rng.uniform(1, 100)),
                }
            )
    df = pd.DataFrame(rows)
    a = mrs_model.pick_panel_slices(df, 2, seed=3)
    b = mrs_model.pick_panel_slices(df, 2, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("y").size().tolist() == [2, 2, 2]
    for _, r in a[a["y"] > 0].iterrows():
        own = df[(df["participant_id"] == r["participant_id"]) & (df["y"] == r["y"])]
        assert r["lesion_area_mm2"] == own["lesion_area_mm2"].max()
    assert (a.loc[a["y"] == 0, "slice"] == 2).all()  # middle of slices 0-4
    draws = {tuple(mrs_model.pick_panel_slices(df, 2, seed=s)["participant_id"]) for s in range(8)}
    assert len(draws) > 1


def test_mrs_model_refuses_a_two_class_model(env, tmp_path, capsys):
    rc = mrs_model_cli.main(
        [
            "--quick",
            "--cohort",
            str(env["cohort"]),
            "--model",
            str(env["models"]["stroke"]),
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert rc == 2
    assert "three-class model" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


# --------------------------------------------------------------------------- misclassified


def test_misclassified_patient_maxima_and_label_error_counts(env):

    assert env["rc"]["misclassified"] == 0
    out = env["out"]["misclassified"]
    _common_outputs(
        out,
        ["misclassified", "label_errors", "slices_flagged", "localisation", "localisation_summary"],
    )
    per = pd.read_csv(out / "misclassified.csv")
    table = env["store"].table
    assert sorted(per["participant_id"]) == sorted(table["participant_id"].unique())
    # Each patient's maximum p(stroke), recomputed here from the model and the store.
    model = load_model(env["models"]["stroke"])
    p = model.predict(np.asarray(env["store"].images)[..., None], verbose=0)[:, 1]
    mx = pd.Series(p).groupby(table["participant_id"].to_numpy()).max()
    got = per.set_index("participant_id")["max_p_stroke"]
    np.testing.assert_allclose(got, mx.reindex(got.index), atol=1e-5)
    # Planted label errors found and clean TIA false alarms, counted from the truth.
    truth = load(env["cohort"]).truth()
    planted = set(truth.index[truth["mislabelled_tia"] == 1])
    tia = set(per.loc[per["group"] == "TIA", "participant_id"])
    clean = tia - planted
    assert planted and clean and planted <= tia
    called = set(per.loc[per["max_p_stroke"] >= 0.5, "participant_id"])
    err = pd.read_csv(out / "label_errors.csv").set_index("patients")
    assert err.loc["planted_mislabelled_tia", "n"] == len(planted)
    assert err.loc["planted_mislabelled_tia", "called_stroke"] == len(planted & called)
    assert err.loc["clean_tia", "n"] == len(clean)
    assert err.loc["clean_tia", "called_stroke"] == len(clean & called)
    for _, r in err.iterrows():
        assert r["wilson_low"] <= r["share"] <= r["wilson_high"]
    md = (out / "report.md").read_text()
    assert f"calls {len(planted & called)} of {len(planted)} planted" in md


def test_misclassified_flags_exactly_the_misses_and_tia_calls(env):
    out = env["out"]["misclassified"]
    per = pd.read_csv(out / "misclassified.csv")
    fl = pd.read_csv(out / "slices_flagged.csv")
    fn = fl[fl["kind"] == "false negative"]
    tc = fl[fl["kind"] == "TIA called stroke"]
    assert len(fn) and len(tc)
    assert (fn["y"] == 1).all() and (fn["p_stroke"] < 0.5).all()
    assert (tc["group"] == "TIA").all() and (tc["p_stroke"] >= 0.5).all()
    assert len(tc) == per.loc[per["group"] == "TIA", "n_slices_called_stroke"].sum()
    lesion = env["store"].table["lesion_visible"].to_numpy() == 1
    assert len(fn) + (per["n_lesion_slices"].sum() - len(fn)) == lesion.sum()
    loc = pd.read_csv(out / "localisation.csv")
    assert set(loc.loc[loc["slices"] == "false negative", "row"]) == set(fn["row"])
    assert loc["pointing_game"].dropna().isin([0.0, 1.0]).all()
    assert loc["relevance_mass"].dropna().between(0, 1).all()
    for key in ("false_negatives", "tia_called_stroke"):
        for m in mrs_model.PANEL_METHODS:
            assert (out / "figures" / f"{key}_{m}.png").is_file()


# --------------------------------------------------------------------------- mc_uncertainty


def test_mc_uncertainty_tables_agree_with_the_slices(env):

    assert env["rc"]["mc_uncertainty"] == 0
    out = env["out"]["mc_uncertainty"]
    prov = _common_outputs(out, ["mc_uncertainty", "concentration", "slices"])
    assert prov["T"] == 5
    d = pd.read_csv(out / "slices.csv")
    assert len(d) == len(env["store"].table)
    assert (d["mutual_information"] >= 0).all()
    assert (d["mutual_information"] <= d["predictive_entropy"] + 1e-9).all()
    assert d["variation_ratio"].between(0, 1).all()
    assert (d["error"] == (d["predicted_class"] != d["y"]).astype(int)).all()
    assert 0 < d["error"].sum() < len(d)
    assert d["entropy_norm"].dropna().between(0, 1).all()
    assert (d["top_share"].dropna() >= 0.05 - 1e-3).all()  # the top 5 % hold >= 5 % of mass
    auc = pd.read_csv(out / "mc_uncertainty.csv").set_index("uncertainty")
    for u in mc_uncertainty.UNCERTAINTIES:
        assert np.isclose(auc.loc[u, "auc_for_errors"], roc_auc_score(d["error"], d[u]))
        assert auc.loc[u, "auc_for_errors_low"] <= auc.loc[u, "auc_for_errors_high"]
    rho = pd.read_csv(out / "concentration.csv")
    assert len(rho) == len(mc_uncertainty.UNCERTAINTIES) * len(mc_uncertainty.CONCENTRATION)
    for _, r in rho.iterrows():
        x = d[[r["uncertainty"], r["cam_feature"]]].dropna()
        want = spearmanr(x.iloc[:, 0], x.iloc[:, 1]).statistic
        assert np.isclose(r["spearman_rho"], want)
        assert -1 <= r["spearman_rho_low"] <= r["spearman_rho_high"] <= 1


def test_error_auc_and_spearman_known_answers():
    d = pd.DataFrame({"error": [0, 0, 0, 1, 1], "u": [0.1, 0.2, 0.3, 0.8, 0.9]})
    assert mc_uncertainty.error_auc(d, ["u"]) == {"u": 1.0}
    assert mc_uncertainty.error_auc(d.assign(u=-d["u"]), ["u"]) == {"u": 0.0}
    with pytest.raises(ValueError, match="no AUC"):
        mc_uncertainty.error_auc(d.assign(error=0), ["u"])
    u = np.random.default_rng(0).normal(size=40)
    data = pd.DataFrame({"u": u, "f": np.exp(u), "g": -u})
    r = mc_uncertainty.concentration_spearman(data, ["u"], ["f", "g"])
    assert np.isclose(r["u|f"], 1.0) and np.isclose(r["u|g"], -1.0)
    with pytest.raises(ValueError, match="constant"):
        mc_uncertainty.concentration_spearman(data.assign(f=1.0), ["u"], ["f"])


def test_sample_patients_is_seeded():
    pids = np.repeat([f"p{i:02d}" for i in range(20)], 3)
    a = mc_uncertainty.sample_patients(pids, 5, seed=1)
    assert np.array_equal(a, mc_uncertainty.sample_patients(pids, 5, seed=1))
    assert len(set(pids[a])) == 5 and a.sum() == 15
    assert not np.array_equal(a, mc_uncertainty.sample_patients(pids, 5, seed=2))
    assert mc_uncertainty.sample_patients(pids, 0, seed=1).all()


def test_patient_table_ranks_tia_patients_by_suspicion():
    sl = pd.DataFrame(
        {
            "participant_id": ["a", "a", "b", "b", "c", "c"],
            "slice": [0, 1] * 3,
            "group": ["TIA", "TIA", "tia", "tia", "stroke", "stroke"],
            "y": [0, 0, 0, 0, 1, 0],
            "p_stroke": [0.2, 0.7, 0.1, 0.3, 0.9, 0.1],
        }
    )
    per = misclassified.patient_table(sl, 0.5, None).set_index("participant_id")
    assert per.loc["a", "max_p_stroke"] == 0.7 and per.loc["a", "slice_at_max"] == 1
    assert per["called_stroke"].tolist() == [True, False, True]
    assert per.loc["a", "rank_among_tia"] == 1 and per.loc["b", "rank_among_tia"] == 2
    assert np.isnan(per.loc["c", "rank_among_tia"])
    assert per.loc["c", "n_lesion_slices"] == 1 and per.loc["a", "n_slices_called_stroke"] == 1
