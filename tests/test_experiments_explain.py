"""The explainability experiments (mirroring, cropping, layer_iteration) end to end.

One small synthetic cohort and two tiny 64 px GAP models are built once per module: a
plain one, and a *mirror-equivariant* one (every convolution kernel symmetrised left to
right), for which the CAM of a mirrored slice is exactly the mirrored CAM -- a known
answer the mirroring experiment must reproduce. One patient is listed as the models'
training patient, so leakage into the outputs is checked too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hypo.cohort as hc
from analyses import cropping as cropping_cli
from analyses import layer_iteration as layer_iteration_cli
from analyses import mirroring as mirroring_cli
from hypo.cam import spatial_layers
from hypo.cohort.synthetic import generate_cohort
from hypo.nets.io import load_model
from hypo.preprocess import SliceStore
from hypo.study.experiments import cropping, mirroring
from tests.helpers import isolate_hypo, make_tiny_cohort, tiny_model

N_PATIENTS = 6
TRAINED_ON = "sub-001"


def _tiny_model(out: Path, cohort_id: str, symmetric: bool) -> Path:
    """A 64 px GAP model fitted one step on noise, optionally mirror-equivariant."""

    def mirror_equivariant(model):
        for layer in model.layers:
            if type(layer).__name__ == "Conv2D":
                w = layer.get_weights()
                # kernel (rows, cols, in, out): symmetric along columns -> conv commutes
                # with a left-right flip; BN, ReLU, 2x2 pooling of even sizes and GAP do too.
                w[0] = 0.5 * (w[0] + w[0][:, ::-1])
                layer.set_weights(w)

    return tiny_model(
        "gap",
        ("no stroke", "stroke"),
        out,
        {"id": cohort_id, "generator_hash": "synthetic"},
        [TRAINED_ON],
        [],
        tune=mirror_equivariant if symmetric else None,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):

    root = tmp_path_factory.mktemp("explain")
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, root)
        cohort = root / "data" / "cohort"
        generate_cohort(cohort, n_patients=N_PATIENTS, seed=20230901, workers=2, progress=False)
        cid = hc.load(cohort).cohort_id
        models = {
            "plain": _tiny_model(root / "m" / "plain", cid, symmetric=False),
            "mirror": _tiny_model(root / "m" / "mirror", cid, symmetric=True),
        }
        yield {"root": root, "cohort": cohort, "models": models, "mp": mp}


def _argv(env, model: str, out: Path, *extra) -> list[str]:
    return [
        "--quick",
        "--quiet",
        "--cohort",
        str(env["cohort"]),
        "--model",
        str(env["models"][model]),
        "--out",
        str(out),
        *extra,
    ]


def _common_outputs(out: Path, name: str) -> dict:
    for f in ("report.md", "report.html", "provenance.json", f"{name}.csv"):
        assert (out / f).is_file(), f
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["experiment"] == name
    assert prov["cohort"]["excluded_training_patients"] == 1
    md = (out / "report.md").read_text()
    assert "Synthetic cohort" in md
    return prov


# --------------------------------------------------------------------------- mirroring


@pytest.fixture(scope="module")
def mirror_run(env):
    out = env["root"] / "out" / "mirroring"
    rc = mirroring_cli.main(_argv(env, "mirror", out))
    return {"rc": rc, "out": out}


def test_mirroring_outputs(mirror_run):
    assert mirror_run["rc"] == 0
    out = mirror_run["out"]
    _common_outputs(out, "mirroring")
    for f in (
        "mirroring_summary.csv",
        "figures/mirror_examples.png",
        "figures/mirror_correlation.png",
        "figures/mirror_asymmetry.png",
    ):
        assert (out / f).is_file(), f
    per = pd.read_csv(out / "mirroring.csv")
    assert TRAINED_ON not in set(per["participant_id"])
    assert set(per["method"]) == {"gradcam", "gradcampp"}
    assert set(per["class_name"]) == {"no stroke", "stroke"}
    # One row per slice, method and class.
    assert not per.duplicated(["participant_id", "slice", "method", "class_index"]).any()
    summ = pd.read_csv(out / "mirroring_summary.csv")
    assert (
        len(summ) == 4
        and (summ["n_slices"] == per.groupby(["method", "class_index"]).size().to_numpy()).all()
    )


def test_mirror_equivariant_model_gives_mirrored_maps(mirror_run):
    """Known answer: symmetric kernels -> the CAM of the mirrored slice is the mirrored CAM."""
    per = pd.read_csv(mirror_run["out"] / "mirroring.csv")
    ok = per["pearson"].notna()
    assert ok.mean() > 0.5  # most maps are not all-zero
    np.testing.assert_allclose(per.loc[ok, "pearson"], 1.0, atol=1e-3)
    np.testing.assert_allclose(per.loc[ok, "spearman"], 1.0, atol=1e-2)
    np.testing.assert_allclose(per["p_mirrored"], per["p_original"], atol=1e-4)
    np.testing.assert_allclose(per["ai_mirrored"], per["ai_original"], atol=1e-3)
    defined = per["sign_agree"].dropna()
    assert len(defined) > 0 and (defined == 1.0).mean() > 0.95


def test_mirror_metrics_of_a_plain_model_are_not_trivially_one(env):
    """The same measure on an ordinary model must be able to fail."""

    model = load_model(env["models"]["plain"], input_shape=(64, 64, 1))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 64, 64, 1)).astype("float32")
    hemi = np.zeros((6, 64, 64), np.uint8)
    hemi[:, :, 32:], hemi[:, :, :32] = 1, 2
    df, _ = mirroring.mirror_metrics(model, x, hemi, methods=("gradcam",))
    assert df["pearson"].dropna().min() < 0.99


def test_asymmetry_index_and_correlations_known_values():
    m = np.zeros((2, 4, 4))
    m[0, :, 3] = 3.0  # all mass on the high-column side = patient's left
    m[1, :, 0], m[1, :, 3] = 1.0, 1.0
    hemi = np.zeros((2, 4, 4), np.uint8)
    hemi[:, :, 2:], hemi[:, :, :2] = 1, 2
    np.testing.assert_allclose(mirroring.asymmetry_index(m, hemi), [1.0, 0.0])
    pr, sp = mirroring.map_correlations(m, 2 * m + 1)
    np.testing.assert_allclose(pr, 1.0)
    np.testing.assert_allclose(sp, 1.0)
    pr, _ = mirroring.map_correlations(np.zeros((1, 3, 3)), m[:1, :3, :3])
    assert np.isnan(pr[0])
    with pytest.raises(ValueError, match="hemisphere"):
        mirroring.asymmetry_index(m, hemi[:, :3])


def test_mirroring_summary_known_values():
    per = pd.DataFrame(
        {
            "participant_id": ["a", "a", "b", "b"],
            "method": "gradcam",
            "class_index": 1,
            "class_name": "stroke",
            "pearson": [1.0, 0.5, np.nan, 0.0],
            "spearman": [1.0, 1.0, 1.0, 1.0],
            "ai_original": [0.5, -0.4, 0.3, -0.2],
            "ai_mirrored": [0.4, 0.4, -0.3, -0.1],
            "sign_agree": [1.0, 0.0, 0.0, 1.0],
            "p_original": [0.9, 0.9, 0.8, 0.8],
            "p_mirrored": [0.8, 0.9, 0.8, 0.6],
        }
    )
    row = mirroring.summarise(per, n_boot=50).iloc[0]
    assert row["n_slices"] == 4 and row["n_patients"] == 2
    assert row["pearson_mean"] == pytest.approx(0.5) and row["pearson_undefined"] == 1
    assert row["sign_agreement"] == pytest.approx(0.5)
    # Of the two slices that kept their image side, one (ai_original < 0) kept the left.
    assert row["stayed_on_image_left"] == pytest.approx(0.5)
    assert row["mean_abs_probability_change"] == pytest.approx(0.075)


# --------------------------------------------------------------------------- cropping


@pytest.fixture(scope="module")
def crop_run(env):
    out = env["root"] / "out" / "cropping"
    rc = cropping_cli.main(_argv(env, "plain", out))
    return {"rc": rc, "out": out}


def test_cropping_outputs_are_paired_and_bounded(crop_run):
    assert crop_run["rc"] == 0
    out = crop_run["out"]
    prov = _common_outputs(out, "cropping")
    assert prov["uncropped_store"]["config"]["crop"] is False
    for f in ("cropping_tests.csv", "figures/cropping_examples.png", "figures/cropping_paired.png"):
        assert (out / f).is_file(), f
    per = pd.read_csv(out / "cropping.csv")
    assert TRAINED_ON not in set(per["participant_id"])
    assert not per.duplicated(["participant_id", "slice", "method", "class_index"]).any()
    for m in cropping.MEASURES:
        for cond in cropping.CONDITIONS:
            v = per[f"{m}_{cond}"].dropna()
            assert ((v >= 0) & (v <= 1)).all(), (m, cond)
    # The two probabilities of a slice sum to one in each condition (same model, softmax).
    for cond in cropping.CONDITIONS:
        s = per.groupby(["participant_id", "slice", "method"])[f"probability_{cond}"].sum()
        np.testing.assert_allclose(s, 1.0, atol=1e-4)
    tests = pd.read_csv(out / "cropping_tests.csv")
    assert len(tests) == 2 * 2 * len(cropping.MEASURES)
    ok = tests["p_patients"].notna()
    assert ((tests.loc[ok, "p_patients"] > 0) & (tests.loc[ok, "p_patients"] <= 1)).all()
    row = tests[
        (tests["method"] == "gradcam")
        & (tests["class_index"] == 1)
        & (tests["measure"] == "outside_brain_mass")
    ].iloc[0]
    g = per[(per["method"] == "gradcam") & (per["class_index"] == 1)]
    d = (g["outside_brain_mass_cropped"] - g["outside_brain_mass_uncropped"]).dropna()
    assert row["mean_difference"] == pytest.approx(d.mean())
    assert row["difference_low"] <= row["mean_difference"] <= row["difference_high"]


def test_crop_makes_the_brain_fill_more_of_the_image(env, crop_run):
    """The property the experiment rests on: both stores hold the same slices, and the
    brain covers more of each cropped slice than of the uncropped one."""

    prov = json.loads((crop_run["out"] / "provenance.json").read_text())
    cache = env["root"] / "cache" / "slices"
    unc = SliceStore.open(cache / prov["uncropped_store"]["slice_store"])
    crp = SliceStore.open(cache / prov["cohort"]["slice_store"])
    pairs = cropping.pair_rows(crp.table, unc.table, np.arange(len(crp)))
    assert len(pairs) == len(crp)
    fc = crp.masks["truth_brain"][pairs["row_cropped"]].mean(axis=(1, 2))
    fu = unc.masks["truth_brain"][pairs["row_uncropped"]].mean(axis=(1, 2))
    big = fu > 0.05
    assert (fc[big] > fu[big]).mean() > 0.9


def test_outside_mass_and_pairing_units():
    maps = np.ones((1, 4, 4))
    brain = np.zeros((1, 4, 4), bool)
    brain[0, 1:3, 1:3] = True
    assert cropping.outside_mass(maps, brain)[0] == pytest.approx(12 / 16)
    assert np.isnan(cropping.outside_mass(np.zeros((1, 4, 4)), brain)[0])
    a = pd.DataFrame({"participant_id": ["p1", "p1", "p2"], "slice": [3, 4, 3]})
    b = pd.DataFrame({"participant_id": ["p2", "p1"], "slice": [3, 4]})
    pairs = cropping.pair_rows(a, b, [0, 1, 2])
    assert pairs[["row_cropped", "row_uncropped"]].values.tolist() == [[1, 1], [2, 0]]


# --------------------------------------------------------------------------- layers


@pytest.fixture(scope="module")
def layer_run(env):
    out = env["root"] / "out" / "layer_iteration"
    rc = layer_iteration_cli.main(_argv(env, "plain", out, "--figure-layers", "all"))
    return {"rc": rc, "out": out}


def test_layer_iteration_curve(env, layer_run):

    assert layer_run["rc"] == 0
    out = layer_run["out"]
    _common_outputs(out, "layer_iteration")
    for f in ("layer_iteration_slices.csv", "figures/layer_grid.png", "figures/layer_curve.png"):
        assert (out / f).is_file(), f
    curve = pd.read_csv(out / "layer_iteration.csv")
    model = load_model(env["models"]["plain"], input_shape=(64, 64, 1))
    layers = spatial_layers(model)
    assert len(curve) == 2 * len(layers)
    assert set(curve["layer"]) == set(layers)
    for m in ("relevance_mass", "pointing_game", "outside_brain_mass"):
        v = curve[m].dropna()
        assert len(v) and ((v >= 0) & (v <= 1)).all(), m
    assert 0 < curve["chance"].iloc[0] < 1
    per = pd.read_csv(out / "layer_iteration_slices.csv")
    assert TRAINED_ON not in set(per["participant_id"])
    # Dropout is the identity at inference: its maps equal those of the pooling before it.
    for method in ("gradcam", "gradcampp"):
        c = curve[curve["method"] == method].set_index("layer")
        for la in (x for x in layers if x.endswith("_dropout")):
            pool = la.replace("_dropout", "_pool")
            np.testing.assert_allclose(
                c.loc[la, ["relevance_mass", "outside_brain_mass"]].to_numpy(float),
                c.loc[pool, ["relevance_mass", "outside_brain_mass"]].to_numpy(float),
                atol=1e-6,
            )


def test_layer_iteration_rejects_unknown_slice_and_layer(env):
    out = env["root"] / "out" / "bad"
    assert layer_iteration_cli.main(_argv(env, "plain", out, "--slices", "sub-999:3")) == 2
    assert layer_iteration_cli.main(_argv(env, "plain", out, "--slices", f"{TRAINED_ON}:5")) == 2
    assert layer_iteration_cli.main(_argv(env, "plain", out, "--layers", "no_such_layer")) == 2
    assert not (out / "report.md").exists()


# --------------------------------------------------------------------------- own cohort


def test_own_cohort_without_ground_truth_uses_the_image_brain(env):
    """A researcher's cohort (NIfTI + lesion masks, no synthetic truth): brain and midline come
    from the image, and no report calls it synthetic."""

    own = make_tiny_cohort(env["root"] / "own", n_patients=4, masks=True, slice_labels=True)
    for mod in (mirroring_cli, cropping_cli, layer_iteration_cli):
        out = env["root"] / "out" / f"own_{mod.NAME}"
        argv = [
            "--quiet",
            "--cohort",
            str(own),
            "--model",
            str(env["models"]["plain"]),
            "--out",
            str(out),
            "--examples",
            "1",
        ]
        assert mod.main(argv) == 0, mod.NAME
        md = (out / "report.md").read_text()
        assert "image-derived" in md and "Synthetic cohort" not in md
        assert len(pd.read_csv(out / f"{mod.NAME}.csv")) > 0
