"""The training experiments (model_debugging, reproducibility, cam3d) end to end, --quick.

One module fixture generates a 12-patient synthetic cohort and a tiny 64 px 2D model in
temporary data/cache folders and runs each experiment once with the smallest settings;
the tests check outputs, value ranges and known answers (equal seeds -> identical maps;
a finished model is reused, not retrained).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyses import cam3d as cam3d_cli
from analyses import model_debugging as model_debugging_cli
from analyses import reproducibility as reproducibility_cli
from hypo.study.experiments import cam3d, reproducibility
from hypo.study.experiments.training import spearman_in_region
from tests.helpers import isolate_hypo, tiny_model

N_PATIENTS = 12


def _tiny_2d_model(out: Path) -> Path:
    """A 64 px GAP stroke model fitted one epoch on noise, with a card (another cohort)."""
    return tiny_model(
        "gap", ("no stroke", "stroke"), out, {"id": "elsewhere"}, ["sub-001"], ["sub-002"], seed=0
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("training_experiments")
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, root)
        common = ["--quick", "--quick-patients", str(N_PATIENTS), "--quiet", "--n-boot", "20"]
        out = {"root": root}
        out["md_argv"] = [
            *common,
            "--architectures",
            "gap",
            "shallow",
            "--mprt-slices",
            "2",
            "--out",
            str(root / "md"),
        ]
        out["md"] = model_debugging_cli.main(out["md_argv"])
        out["rep"] = reproducibility_cli.main(
            [*common, "--seeds", "3", "3", "--methods", "gradcam", "--out", str(root / "rep")]
        )
        tiny = _tiny_2d_model(root / "m2d")
        out["c3"] = cam3d_cli.main([*common, "--model", str(tiny), "--out", str(root / "c3")])
        yield out


def test_model_debugging_writes_table2_and_explainability(runs):
    assert runs["md"] == 0
    out = runs["root"] / "md"
    for f in (
        "table2.csv",
        "model_debugging.csv",
        "explainability.csv",
        "localisation.csv",
        "mprt.csv",
        "report.md",
        "report.html",
        "provenance.json",
        "figures/mprt.png",
    ):
        assert (out / f).is_file(), f
    t2 = pd.read_csv(out / "table2.csv")
    assert t2["Architecture"].tolist() == ["GAP-Model", "Shallow-Model"]
    perf = pd.read_csv(out / "model_debugging.csv")
    acc = perf[perf["metric"] == "accuracy"]
    assert ((acc["wilson_low"] <= acc["estimate"]) & (acc["estimate"] <= acc["wilson_high"])).all()
    assert (acc["n"] == acc["n"].iloc[0]).all()  # same test slices for every architecture
    loc = pd.read_csv(out / "localisation.csv")
    rm = loc["relevance_mass"].dropna()
    assert ((rm >= 0) & (rm <= 1)).all()
    assert set(loc["architecture"]) <= {"gap", "shallow"}
    mp = pd.read_csv(out / "mprt.csv")
    assert set(mp["architecture"]) <= {"gap", "shallow"}
    rho = mp["spearman_rho"].dropna()
    assert ((rho >= -1 - 1e-9) & (rho <= 1 + 1e-9)).all()
    md = (out / "report.md").read_text()
    assert "synthetic" in md and "Not trained in this run" in md
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["setting"]["size"] == 64 and prov["setting"]["epochs"] == 1
    # Both models were tested on the same patients, none of whom they trained on.
    cards = [
        json.loads((Path(m["folder"]) / "card.json").read_text()) for m in prov["models"].values()
    ]
    assert cards[0]["test_patients"] == cards[1]["test_patients"]
    assert not set(cards[0]["test_patients"]) & set(cards[0]["train_patients"])


def test_model_debugging_reuses_finished_models(runs, tmp_path):
    argv = list(runs["md_argv"])
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    argv[argv.index("--architectures") + 1 : argv.index("--architectures") + 3] = ["gap"]
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, runs["root"])
        assert model_debugging_cli.main(argv) == 0
    prov = json.loads((tmp_path / "again" / "provenance.json").read_text())
    assert prov["models"]["gap"]["reused"] is True


def test_model_debugging_refuses_herzog_at_a_size_it_cannot_take(runs, capsys):
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, runs["root"])
        rc = model_debugging_cli.main(
            [
                "--quick",
                "--quiet",
                "--size",
                "96",
                "--architectures",
                "herzog",
                "--out",
                str(runs["root"] / "x"),
            ]
        )
    assert rc == 2 and "herzog" in capsys.readouterr().err


def test_reproducibility_equal_seeds_give_identical_maps(runs):
    """Deterministic training: two runs with the same seed make the same model, so every
    defined similarity is exactly 1 -- a known answer for the whole pipeline."""
    assert runs["rep"] == 0
    out = runs["root"] / "rep"
    for f in (
        "reproducibility.csv",
        "similarity.csv",
        "agreement.csv",
        "report.md",
        "provenance.json",
    ):
        assert (out / f).is_file(), f
    sim = pd.read_csv(out / "similarity.csv")
    assert set(sim["class"]) == {"no stroke", "stroke"}
    for col in ("spearman_raw", "spearman_brain", "top_k_overlap"):
        v = sim[col].dropna()
        assert len(v) > 0, col
        np.testing.assert_allclose(v, 1.0, atol=1e-9)
    np.testing.assert_allclose(sim["p_model_1"], sim["p_model_2"])
    assert sim["probability_bin"].isin(["0-0.1", "0.1-0.5", "0.5-0.9", "0.9-1"]).all()
    agree = pd.read_csv(out / "agreement.csv")
    assert agree.loc[agree["model"] == "both", "same_prediction"].iloc[0] == 1.0


def test_top_k_overlap_and_regional_spearman_known_answers():
    rng = np.random.default_rng(0)
    a = rng.random((3, 10, 10))
    region = np.ones_like(a, bool)
    region[:, :, :2] = False
    assert np.allclose(reproducibility.top_k_overlap(a, a, region, 0.1), 1.0)
    # Reversed ranking: the top 10 % of one map are the bottom 10 % of the other.
    assert np.allclose(reproducibility.top_k_overlap(a, -a, region, 0.1), 0.0)
    assert np.allclose(spearman_in_region(a, 2 * a + 1, region), 1.0)
    assert np.allclose(spearman_in_region(a, -a, region), -1.0)
    const = np.zeros_like(a)
    assert np.isnan(reproducibility.top_k_overlap(a, const, region, 0.1)).all()


def test_cam3d_scores_3d_and_stacked_2d_maps(runs):
    assert runs["c3"] == 0
    out = runs["root"] / "c3"
    for f in ("cam3d.csv", "summary.csv", "performance.csv", "report.md", "provenance.json"):
        assert (out / f).is_file(), f
    perf = pd.read_csv(out / "performance.csv").set_index("metric")
    assert 0 <= perf.loc["accuracy", "estimate"] <= 1
    pp = pd.read_csv(out / "cam3d.csv")
    if len(pp):  # the tiny cohort's test patients may have no lesion on the grid
        for col in ("relevance_mass_3d", "relevance_mass_2d_stacked"):
            v = pp[col].dropna()
            assert ((v >= 0) & (v <= 1)).all()
        assert (out / "figures" / "montage.png").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["setting"]["grid"] == [32, 32, 8]
    assert "synthetic" in (out / "report.md").read_text()


def test_cam3d_resampling_keeps_image_and_mask_aligned():
    """A mask goes through exactly the image's crop and resampling: a bright block and its
    mask land on the same voxels, and left stays left."""
    vol = np.zeros((40, 30, 12), np.float32)
    vol[5:35, 3:27, 1:11] = 100.0  # head
    vol[8:14, 4:10, 4:8] = 250.0  # bright block near row 0, column 0
    mask = (vol == 250.0).astype(np.uint8)
    box = cam3d.head_box(vol)
    assert box == (slice(5, 35), slice(3, 27), slice(1, 11))
    img = cam3d.to_grid(vol, box, (16, 16, 8), order=1)
    m = cam3d.to_grid(mask, box, (16, 16, 8), order=0) > 0.5
    assert m.any() and img[m].mean() > 200
    rows, cols, _ = np.nonzero(m)
    assert rows.max() < 8 and cols.max() < 8
    # RAS+: x = 0 is the patient's left-most voxel; the radiological view shows the
    # patient's right in column 0, so the left ends up in the last column.
    canon = np.zeros((6, 5, 3))
    canon[0] = 1
    rad = cam3d.radiological(canon)
    assert rad.shape == (5, 6, 3)
    assert rad[:, -1].all() and not rad[:, 0].any()
