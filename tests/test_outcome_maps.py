"""The outcome model as a map source (issue 17): the study's third source and map sets.

Tiny sizes: two tiny cohorts on disk (a development cohort whose 7 stroke patients have
mRS 0-6, an analysis cohort with 3 stroke patients), a tiny 64 px encoder and an ordinal
head fitted on its development embeddings the way the shipped model's head is fitted.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.helpers import isolate_hypo, make_tiny_cohort, tiny_model

N_COMPONENTS = 4
L2 = 1.0


def _outcome_model(root, dev_root, encoder_dir, name="outcome", cohort_id=None, train=None):
    """A saved outcome model like ``models/outcome-mil-128`` (head.json, card.json,
    config.json), its head fitted on the tiny encoder's development embeddings."""
    from hypo._util import weights_hash
    from hypo.nets.io import load_model
    from hypo.nets.outcome import fit_ordinal_head
    from hypo.study.outcome import (
        LEVELS,
        OutcomeConfig,
        image_penalty,
        load_outcome_data,
        pooled_features,
    )

    enc = load_model(encoder_dir)
    dev = load_outcome_data(dev_root, OutcomeConfig(encoder=str(encoder_dir)), enc)
    X = pooled_features(dev, ("mean",))["mean"]
    head = fit_ordinal_head(X, dev.y, L2, LEVELS, penalize=image_penalty(X),
                            n_components=N_COMPONENTS)  # fmt: skip
    out = root / name
    out.mkdir()
    heads = {"pooling": "mean", "embedding_layer": "head_relu", "image": head.to_dict()}
    (out / "head.json").write_text(json.dumps(heads))
    card = {
        "architecture": "mil-ordinal",
        "classes": [f"mRS {k}" for k in LEVELS],
        "cohort": {"id": cohort_id or dev.cohort_id},
        "train_patients": sorted(train if train is not None else dev.patients["participant_id"]),
        "val_patients": [],
        "preprocessing": enc.hypo_card["preprocessing"],
        "cam_layer": enc.hypo_card["cam_layer"],
        "encoder": {"model": str(encoder_dir), "weights_hash": weights_hash(enc)},
        "pooling": "mean",
        "l2": L2,
    }
    (out / "card.json").write_text(json.dumps(card))
    (out / "config.json").write_text(json.dumps({"n_components": N_COMPONENTS,
                                                 "groups": ["stroke"]}))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("outcome_maps")
    with pytest.MonkeyPatch.context() as mp:
        isolate_hypo(mp, root)
        # 14 patients: the 7 stroke ones (even indices) have mRS 0, 2, 4, 6, 1, 3, 5.
        dev = make_tiny_cohort(root, 14, name="dev", seed=1, slice_labels=True)
        analysis = make_tiny_cohort(root, 6, name="analysis", seed=2, slice_labels=True)
        enc = tiny_model("gap", ("no stroke", "stroke"), root / "models" / "stroke-enc",
                         {"id": "dev-elsewhere"})  # fmt: skip
        om = _outcome_model(root / "models", dev, enc)
        yield {"root": root, "dev": dev, "analysis": analysis, "encoder": enc, "outcome": om,
               "mp": mp}  # fmt: skip


def _features(setup, y, cache, **kw):
    from hypo.study.outcome_maps import outcome_map_features

    return outcome_map_features(y, layers=("block5_relu", "block3_relu"), analysis=setup["analysis"],
                                dev=setup["dev"], cache_root=cache, config=setup["outcome"], **kw)  # fmt: skip


def _map_set(setup, y, cache):
    from hypo.study.outcome_maps import outcome_map_set

    return outcome_map_set(y, layers=("block5_relu", "block3_relu"), analysis=setup["analysis"],
                           dev=setup["dev"], cache_root=cache, config=setup["outcome"])  # fmt: skip


def test_map_sets_named_deterministic_cached_and_outcome_dependent(setup, monkeypatch):
    import hypo.cam.bag as bag
    from hypo.cam import CamStore
    from hypo.study import outcome_maps as om

    inp = om.map_inputs(setup["outcome"], setup["analysis"], setup["dev"])
    assert len(inp.dev.y) == 7 and inp.patients == ["sub-001", "sub-003", "sub-005"]
    # None = the cohort's own mRS: the refit is the shipped head.
    assert np.allclose(om.refit_head(inp).beta, inp.model.head.beta, atol=1e-8)
    calls = []
    real = bag.bag_cams
    monkeypatch.setattr(bag, "bag_cams", lambda *a, **k: calls.append(1) or real(*a, **k))

    ms = _map_set(setup, None, setup["root"] / "c1")
    a = ms.table
    n_first = len(calls)
    assert n_first == 3  # one pass per patient for both layers
    cols = [om.map_column(f, m, la) for la in ("block5_relu", "block3_relu")
            for m in ("gradcam", "gradcampp") for f in om.OUTCOME_FEATURES]  # fmt: skip
    assert list(a.columns) == ["participant_id", *cols, "outcome_eta"]
    assert cols[0] == "outcome__asymmetry_ipsi_contra__gradcam@block5_relu"
    assert a["participant_id"].tolist() == inp.patients
    # (Tiny 20 x 24 px volumes have no image-derived brain, so the lesion-slice features
    # are undefined here; the maps themselves are compared below.)
    assert np.isfinite(a["outcome_eta"]).all()
    assert ms.seconds["layers"] == ["block5_relu", "block3_relu"] and ms.seconds["cams_s"] > 0

    # Rerun: read from the cache, no CAM computed.
    again_set = _map_set(setup, None, setup["root"] / "c1")
    again = again_set.table
    assert len(calls) == n_first and again_set.seconds == {}
    pd.testing.assert_frame_equal(a, again)
    # A killed run resumes: the map-set table gone, the CAM chunks kept -> no CAM recomputed.
    for f in (setup["root"] / "c1" / "map_sets").glob("*.parquet"):
        f.unlink()
    resumed = _features(setup, None, setup["root"] / "c1")
    assert len(calls) == n_first
    pd.testing.assert_frame_equal(a, resumed)

    # Deterministic: the same inputs in a fresh cache give the same numbers.
    fresh = _features(setup, None, setup["root"] / "c2")
    assert len(calls) == 2 * n_first
    pd.testing.assert_frame_equal(a, fresh)

    # Another development outcome vector: another head, other maps and eta.
    y = inp.dev.y[::-1].copy()
    assert not np.allclose(om.refit_head(inp, y).beta, inp.model.head.beta)
    b = _features(setup, y, setup["root"] / "c1")
    assert len(calls) == 3 * n_first
    assert not np.allclose(a["outcome_eta"], b["outcome_eta"])
    stores = sorted((setup["root"] / "c1" / "cams").glob("block3_relu-*"))
    assert len(stores) == 2  # one CAM cache per head
    maps = [CamStore.open(s).maps("gradcampp", np.arange(12), resized=False) for s in stores]
    assert not np.allclose(maps[0], maps[1])

    with pytest.raises(ValueError, match="dev_mrs has shape"):
        _features(setup, y[:3], setup["root"] / "c1")


def test_study_has_the_outcome_source(setup):
    """compute_features + build_table of the study with the outcome model configured:
    outcome__<feature>__<source> columns, the outcome model's leakage flag; the CNNs'
    columns unchanged by it."""
    from hypo.cohort import load
    from hypo.paths import cache_dir
    from hypo.stats.registry import verify_lock
    from hypo.study.config import HYPOTHESES_DIR, LOCK_FILE, StudyConfig
    from hypo.study.run import compute_features, outcome_layer
    from hypo.study.table import build_table, population_flow

    root = setup["root"]
    cohort = load(setup["analysis"])
    # The outcome model "trained" on one analysed patient of this cohort: flagged.
    om = _outcome_model(root / "models", setup["dev"], setup["encoder"], "outcome-leaky",
                        cohort_id=cohort.cohort_id, train=["sub-003"])  # fmt: skip
    cnn = {"id": "dev-elsewhere", "generator_hash": "synthetic"}
    cfg = StudyConfig(
        cohort=setup["analysis"],
        stroke_model=setup["encoder"],
        mrs_model=tiny_model(
            "mrs", ("no stroke", "mRS 0-2", "mRS 3-6"), root / "models" / "mrs", cnn
        ),  # fmt: skip
        outcome_model=om,
        progress=False,
        max_qc_fail_fraction=1.0,
    )
    reg = verify_lock(HYPOTHESES_DIR, LOCK_FILE)
    dirs = cfg.model_dirs()
    assert set(dirs) == {"stroke", "mrs", "outcome"}
    cards = {k: json.loads((p / "card.json").read_text()) for k, p in dirs.items()}
    layers = {k: cards[k]["cam_layer"] for k in dirs}
    layers["outcome"] = outcome_layer(cfg, cards["outcome"], reg)  # the registered one
    assert layers["outcome"] == reg.hypotheses["H1_outcome"].layer
    timings = {}
    work = cache_dir() / "study"
    feats = compute_features(cfg, cohort, dirs, cards, layers, reg, work, lambda m: None, timings)
    assert "features_outcome_s" in timings
    assert len(feats["outcome"].cam_dirs) == 2  # bag CAMs and the randomised-encoder control
    sources = ["cam", "control_uniform", "control_intensity", "control_random_model"]
    table = build_table(feats, reg, cards, layers, cfg.methods, sources).table
    for f in ("asymmetry_ipsi_contra", "ventricle_density_ratio", "edge_density_ratio",
              "relevance_mass_lesion"):  # fmt: skip
        for src in sources:
            assert f"outcome__{f}__{src}" in table.columns
    # The registered method and aggregation at the outcome card's layer, class 0 (eta).
    wide = feats["outcome"].table.set_index("participant_id")
    col = f"relevance_mass_lesion_lesion__cam_gradcam_{layers['outcome']}_c0"
    assert col in wide.columns
    assert np.array_equal(table["outcome__relevance_mass_lesion__cam"].to_numpy(),
                          table["participant_id"].map(wide[col]).to_numpy(), equal_nan=True)  # fmt: skip
    assert table["in_training_outcome_model"].tolist() == [
        p == "sub-003" for p in table["participant_id"]
    ]
    _, _, pop = population_flow(table)
    assert not pop[table["participant_id"].eq("sub-003")].any()
    # The CNNs' columns are those of a run without the outcome model.
    without = {k: v for k, v in feats.items() if k != "outcome"}
    base = build_table(without, reg.without_models(["outcome"]), cards, layers, cfg.methods,
                       sources).table  # fmt: skip
    shared = [c for c in base.columns if c not in ("in_model_training",)]
    pd.testing.assert_frame_equal(base[shared], table[shared])


def test_one_pass_equals_a_pass_per_layer():
    from hypo.cam.bag import bag_cams
    from hypo.nets import build_model
    from hypo.nets.outcome import fit_ordinal_head

    model = build_model("shallow", input_shape=(32, 32, 1), seed=6)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 32, 32, 1)).astype(np.float32)
    head = fit_ordinal_head(rng.normal(size=(14, 129)), np.arange(14) // 2, l2=1.0,
                            levels=range(7))  # fmt: skip
    head.beta = rng.normal(size=head.beta.shape)
    layers = ("block3_relu", "block1_relu", "block2_relu")  # any order
    one = bag_cams(model, x, np.full(5, 20.0), head, "volume_sum", layers, one_pass=True)
    per = bag_cams(model, x, np.full(5, 20.0), head, "volume_sum", layers)
    for la in layers:
        assert one[la].provenance["eta"] == pytest.approx(per[la].provenance["eta"], rel=1e-6)
        for m in ("gradcam", "gradcampp"):
            scale = np.abs(per[la].raw[m]).max() + 1e-12
            assert np.abs(one[la].raw[m] - per[la].raw[m]).max() <= 1e-5 * scale, (la, m)


def test_outcome_layer_follows_the_registry_unless_overridden():
    from types import SimpleNamespace as NS

    from hypo.study.config import StudyConfig, StudyError
    from hypo.study.run import outcome_layer

    card = {"cam_layer": "block5_relu"}
    reg = NS(hypotheses={"H1": NS(model="stroke", layer="cam_layer"),
                         "O1": NS(model="outcome", layer="block3_relu")})  # fmt: skip
    assert outcome_layer(StudyConfig(), card, reg) == "block3_relu"
    assert outcome_layer(StudyConfig(outcome_layer="block4_relu"), card, reg) == "block4_relu"
    assert outcome_layer(StudyConfig(), card, NS(hypotheses={})) == "block5_relu"
    reg.hypotheses["O2"] = NS(model="outcome", layer="block4_relu")
    with pytest.raises(StudyError, match="one layer per model"):
        outcome_layer(StudyConfig(), card, reg)


def test_layercam_map_sets_hold_the_multi_layer_fusion(setup):
    from hypo.cam import CamStore
    from hypo.cam.fusion import fuse_layer_maps
    from hypo.study import outcome_maps as om

    layers = ("block5_relu", "block3_relu")
    ms = om.outcome_map_set(None, layers=layers, methods=("gradcam", "layercam"),
                            analysis=setup["analysis"], dev=setup["dev"],
                            cache_root=setup["root"] / "c3", config=setup["outcome"])  # fmt: skip
    cols = [om.map_column(f, m, la) for la, m in [(la, m) for la in layers
            for m in ("gradcam", "layercam")] + [("fusion", "layercam")]
            for f in om.OUTCOME_FEATURES]  # fmt: skip
    assert list(ms.table.columns) == ["participant_id", *cols, "outcome_eta"]
    # The fused view's maps: each layer scaled by its largest value, the shallow one lifted
    # by tanh(2 x), the maximum taken.
    stores = {la: CamStore.open(next((setup["root"] / "c3" / "cams").glob(f"{la}-*")))
              for la in layers}  # fmt: skip
    rows = np.arange(len(stores["block5_relu"].logits))
    views = [om._RowsView(stores[la], rows) for la in layers]
    fused = om._FusedView(views)
    assert fused.layer == "fusion" and fused.methods == ("layercam",)
    got = np.concatenate([c for _, _, c in fused.iter_chunks("layercam")])
    maps = [stores[la].maps("layercam", rows, resized=True) for la in layers]
    scales = [stores[la].maps("layercam", rows, resized=False).max() for la in layers]
    np.testing.assert_allclose(got, fuse_layer_maps(maps, scales, deep=0), rtol=1e-5, atol=1e-7)
    assert got.max() <= 1.0 and got.max() > 0
    with pytest.raises(ValueError, match="input size only"):
        next(fused.iter_chunks("layercam", resized=False))


def test_encoder_information_finds_swelling_only_where_the_design_carries_it():
    from types import SimpleNamespace

    from hypo.study.outcome_maps import encoder_swelling_information

    rng = np.random.default_rng(0)
    n = 300
    covs = pd.DataFrame({"swelling": rng.normal(size=n),
                         "true_tissue_volume_ml": rng.lognormal(2.5, 1.0, size=n),
                         "side": rng.choice(["left", "right"], size=n),
                         "territory": "MCA", "age": rng.normal(70, 10, size=n),
                         "sex": rng.choice(["F", "M"], size=n),
                         "mrs_before": rng.integers(0, 3, size=n),
                         "nihss_baseline": rng.integers(0, 20, size=n), "ivt": 0, "iat": 0})  # fmt: skip
    logv = np.log1p(covs["true_tissue_volume_ml"].to_numpy())
    noise = rng.normal(size=(n, 6))
    blind = np.column_stack([noise, logv])  # embeddings that see volume, not swelling
    seeing = np.column_stack([noise, covs["swelling"] + 0.3 * rng.normal(size=n), logv])

    def run(design):
        inp = SimpleNamespace(design=design,
                              dev=SimpleNamespace(covariates=covs, cohort_id="fake"))  # fmt: skip
        return encoder_swelling_information(inp).set_index(["target", "predictors"])["cv_r"]

    r_blind, r_seeing = run(blind), run(seeing)
    head = "encoder embeddings + lesion extent (the head's design)"
    target = "swelling beyond the primary covariates"
    assert abs(r_blind[(target, head)]) < 0.2
    assert r_seeing[(target, head)] > 0.8
    assert r_blind[("ln(true infarct volume + 1) (positive control)", head)] > 0.95
    with pytest.raises(ValueError, match="not a synthetic cohort"):
        encoder_swelling_information(SimpleNamespace(
            design=blind, dev=SimpleNamespace(covariates=None, cohort_id="own")))  # fmt: skip
