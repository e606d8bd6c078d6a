"""The patient-level outcome model (issue 16): ordinal head, poolings, cross-fitting.

Cohorts here are built in memory: 60 patients whose slices carry a lesion whose area a
synthetic "encoder" embedding reads (plus noise), with mRS planted on the log lesion
volume or drawn independently of everything (complete null).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import special

from hypo.nets.cards import leaked_patients
from hypo.nets.outcome import (
    SliceEmbeddings,
    fit_ordinal_head,
    make_bags,
    pool_fixed,
    slice_weights,
)
from hypo.stats import fit_proportional_odds
from hypo.study import outcome as so

N_PATIENTS = 60
DIM = 12


def _draw_mrs(eta, rng):
    theta = np.array([-1.5, -0.6, 0.2, 1.0, 1.8, 2.6])
    cum = special.expit(theta[None, :] - eta[:, None])
    return (rng.random(len(eta))[:, None] > cum).sum(1)


def _cohort(planted: bool, seed: int = 0, n: int = N_PATIENTS) -> so.OutcomeData:
    """Patients with 8-14 slices; lesion volume log-normal; per-slice embedding = lesion
    area on that slice (two channels) + noise; mRS planted on log volume or null."""
    rng = np.random.default_rng(seed)
    pids = [f"sub-{i:03d}" for i in range(n)]
    vol = np.exp(rng.normal(2.5, 1.2, n))
    emb, prob, spid, svol = [], [], [], []
    for p, v in zip(pids, vol):
        k = int(rng.integers(8, 15))
        frac = rng.dirichlet(np.ones(4))
        area = np.zeros(k)
        start = int(rng.integers(0, k - 4))
        area[start : start + 4] = frac * v
        e = rng.normal(0, 0.3, (k, DIM))
        e[:, 0] += np.log1p(area)
        e[:, 1] += 0.5 * np.log1p(area)
        emb.append(np.abs(e))
        prob.append(np.where(area > 0, 0.9, 0.05))
        spid += [p] * k
        svol.append(np.full(k, 25.0))
    e = SliceEmbeddings(np.concatenate(emb).astype(np.float32), np.concatenate(prob),
                        np.array(spid), np.concatenate(svol), "test", "x")  # fmt: skip
    lv = np.log1p(vol)
    eta = 2.5 * (lv - lv.mean()) / lv.std() if planted else np.zeros(n)
    y = _draw_mrs(eta, rng)
    # Every level present in the cohort, consistent with the planted order.
    y[np.argsort(eta, kind="stable")[np.linspace(0, n - 1, 7).astype(int)]] = np.arange(7)
    df = pd.DataFrame({"participant_id": pids, "mrs_3months": y,
                       "age": rng.normal(70, 10, n), "nihss_baseline": rng.poisson(6, n),
                       "mrs_before": rng.integers(0, 3, n), "lesion_volume_mask_ml": vol,
                       "n_slices": 0})  # fmt: skip
    bags = make_bags(e.participant_id, pids)
    flow = pd.DataFrame([{"step": "cohort", "n_before": n, "n_excluded": 0, "n_after": n,
                          "reason": "test"}])  # fmt: skip
    return so.OutcomeData(df, bags, e, flow, "test-cohort")


CONFIG = so.OutcomeConfig(select_from=("mean", "volume_sum"), diagnostic_poolings=(),
                          l2_grid=(0.03, 0.3, 3.0), n_components=None, n_boot=50,
                          inner_folds=3)  # fmt: skip


def test_head_unpenalised_equals_fit_proportional_odds():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    y = _draw_mrs(X @ np.array([0.9, -0.6, 0.3]), rng)
    head = fit_ordinal_head(X, y, l2=0.0, standardize=False)
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(mrs=y)
    ref = fit_proportional_odds(df, "mrs ~ a + b + c")
    assert np.allclose(head.beta, ref.coef["estimate"].to_numpy(), atol=1e-3)
    assert np.allclose(head.thresholds, ref.thresholds["estimate"].to_numpy(), atol=1e-3)
    # P(mRS >= k) from the same model, sign as fit_proportional_odds: positive = worse.
    p_ref = ref.predict_proba(df).to_numpy()
    assert np.allclose(head.predict_proba(X), p_ref, atol=1e-3)
    at_least = head.prob_at_least(X)
    assert np.allclose(at_least[:, 2], p_ref[:, 3:].sum(1), atol=1e-3)


def test_thresholds_ordered_and_missing_level_merged():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 4))
    y = np.clip(_draw_mrs(X[:, 0], rng), 0, 5)  # no mRS 6 among these patients
    head = fit_ordinal_head(X, y, l2=1.0, levels=range(7))
    assert np.all(np.diff(head.thresholds) > 0)
    assert head.merged == (6,)
    p = head.predict_proba(X)
    assert p.shape == (50, 7) and np.allclose(p.sum(1), 1) and np.all(p[:, 6] == 0)


def test_reduced_head_is_a_plain_linear_head():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 20))
    y = _draw_mrs(X[:, :3].sum(1), rng)
    h = fit_ordinal_head(X, y, l2=0.1, levels=range(7), n_components=5)
    assert h.beta.shape == (20,) and h.beta_reduced.shape == (5,)
    Z = (X - h.center) / h.scale
    assert np.allclose(h.linear_predictor(X), Z @ h.beta)


def test_poolings_and_no_usable_slice():
    e = SliceEmbeddings(np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 1.0]], np.float32),
                        np.array([0.0, 1.0, 1.0]), np.array(["a", "a", "b"]),
                        np.array([10.0, 10.0, 10.0]), "l", "h")  # fmt: skip
    bags = make_bags(e.participant_id, ["a", "b"])
    assert np.allclose(pool_fixed(e.embeddings, bags, "mean"), [[2, 1], [5, 1]])
    assert np.allclose(pool_fixed(e.embeddings, bags, "max"), [[3, 2], [5, 1]])
    lm = pool_fixed(e.embeddings, bags, "lesion_mean", slice_weights(e, "lesion_mean"))
    assert np.allclose(lm, [[3, 0], [5, 1]])
    vs = pool_fixed(e.embeddings, bags, "volume_sum", slice_weights(e, "volume_sum"))
    assert np.allclose(vs, np.log1p([[30, 0], [50, 10]]))
    with pytest.raises(ValueError, match="'c'.*no usable slice"):
        make_bags(e.participant_id, ["a", "c"])


def test_folds_are_by_patient_and_leak_free():
    data = _cohort(planted=True)
    y = data.y.copy()
    y[10:] = np.where(y[10:] == 6, 5, y[10:])  # mRS 6 in one patient only
    folds = so.outcome_folds(data.patients["participant_id"], y, 5, seed=0)
    pids = data.patients["participant_id"].to_numpy()
    seen = np.concatenate([f.test for f in folds])
    assert sorted(seen) == list(range(len(y)))
    for f in folds:
        assert leaked_patients({"train_patients": pids[f.train]},
                               {"test_patients": pids[f.test]}) == []  # fmt: skip
        assert not set(f.train) & set(f.test)
    # The fold that tests the only mRS-6 patient trains without level 6: merged, counted.
    merged = [f.merged_levels for f in folds]
    assert sum(6 in m for m in merged) == 1
    # The guard itself refuses an overlap.
    assert leaked_patients({"train_patients": pids[:5]}, {"test_patients": pids[3:8]}) == list(
        pids[3:5]
    )


def test_planted_volume_outcome_is_learnt_held_out():
    data = _cohort(planted=True, seed=4)
    cf = so.cross_fit(data, CONFIG, attention=False, diagnostics=False)
    p = so.p_poor(cf.rows["image model"].proba)
    assert np.all(np.isfinite(p))
    m = so.outcome_metrics(data.y, cf.rows["image model"].proba, n_boot=50)
    assert m["auc"] >= 0.75, m
    assert m["auc_low"] <= m["auc"] <= m["auc_high"]
    fus = so.outcome_metrics(data.y, cf.rows["image + clinical fusion"].proba, n_boot=10)
    assert fus["auc"] >= 0.7


def test_complete_null_is_near_chance():
    aucs = []
    for seed in (5, 6):
        data = _cohort(planted=False, seed=seed)
        cf = so.cross_fit(data, CONFIG, attention=False, diagnostics=False)
        aucs.append(so.outcome_metrics(data.y, cf.rows["image model"].proba, n_boot=10)["auc"])
    assert 0.35 <= np.mean(aucs) <= 0.65, aucs


def _fake_inputs(mrs, clinical_cols=("age", "nihss_baseline", "mrs_before")):
    pids = [f"sub-{i}" for i in range(len(mrs))]
    part = pd.DataFrame({"group": "stroke", "mrs_3months": mrs}, index=pd.Index(pids))
    for c in clinical_cols:
        part[c] = 1.0
    cohort = SimpleNamespace(participants=part, cohort_id="c1", is_synthetic=False)
    table = pd.DataFrame({"participant_id": pids, "pixel_mm_row": 1.0, "pixel_mm_col": 1.0,
                          "out_rows": 4, "out_cols": 4, "slice_thickness_mm": 5.0})  # fmt: skip
    store = SimpleNamespace(cohort_id="c1", table=table, path="store",
                            masks={"lesion": np.ones((len(pids), 4, 4), np.uint8)})  # fmt: skip
    emb = SliceEmbeddings(np.ones((len(pids), 2), np.float32), np.ones(len(pids)),
                          np.array(pids), np.ones(len(pids)), "l", "h")  # fmt: skip
    return cohort, store, emb


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"outside 0-6.*sub-2"):
        so.outcome_data(*_fake_inputs([0, 1, 7, 3, 4, 5, 6]))
    with pytest.raises(ValueError, match="column 'nihss_baseline'"):
        so.outcome_data(*_fake_inputs(list(range(7)), clinical_cols=("age", "mrs_before")))
    with pytest.raises(ValueError, match=r"no analysed patient has mRS \[6\]"):
        so.outcome_data(*_fake_inputs([0, 1, 2, 3, 4, 5, 5]))
    cohort, store, emb = _fake_inputs([0, 1, 2, 3, 4, 5, 6, np.nan])
    data = so.outcome_data(cohort, store, emb)
    flow = data.flow.set_index("step")
    assert flow.loc["mRS known", "n_excluded"] == 1 and len(data.y) == 7
    assert np.allclose(data.patients["lesion_volume_mask_ml"], 16 * 5 / 1000)


@pytest.mark.parametrize("pooling", ["lesion_mean", "volume_sum", "max"])
def test_bag_cams_explain_the_cached_score(pooling):
    from hypo.cam.bag import bag_cams
    from hypo.nets import build_model
    from hypo.nets.outcome import embed_slices, encoder_model, lesion_extent

    model = build_model("shallow", input_shape=(32, 32, 1), seed=3)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 32, 32, 1)).astype(np.float32)
    vol = np.full(5, 20.0)
    emb, prob = embed_slices(encoder_model(model), x, batch_size=8)
    e = SliceEmbeddings(emb, prob, np.array(["p"] * 5), vol, "head_relu", "h")
    bags = make_bags(e.participant_id, ["p"])
    z = np.hstack([pool_fixed(emb, bags, pooling, slice_weights(e, pooling)),
                   lesion_extent(e, bags)[:, None]])  # fmt: skip
    spread = z + rng.normal(0, 1, (14, z.shape[1]))
    head = fit_ordinal_head(spread, np.arange(14) // 2, l2=1.0, levels=range(7))
    head.beta = rng.normal(size=head.beta.shape)
    eta_cached = head.linear_predictor(z)[0]
    res = bag_cams(model, x, vol, head, pooling, layers=("block3_relu", "block2_relu"))
    for r in res.values():
        assert abs(r.provenance["eta"] - eta_cached) < 1e-5 * max(1.0, abs(eta_cached))
        assert r["gradcam"].shape == (5, 1, 32, 32) and r.raw["gradcampp"].shape[1] == 1
        assert np.all(np.isfinite(r.raw["gradcam"]))
        assert len(r.provenance["slice_weights"]) == 5
    if pooling == "max":
        # A slice that holds no channel's maximum gets no gradient: an all-zero map.
        w = np.array(res["block3_relu"].provenance["slice_weights"])
        for s in np.flatnonzero(w == 0):
            assert np.all(res["block3_relu"].raw["gradcam"][s] == 0)


def test_bag_model_equals_cached_path_and_loads(tmp_path):
    import json

    from hypo.nets import build_model, load_model
    from hypo.nets.outcome import build_bag_model, embed_slices, encoder_model, lesion_extent

    model = build_model("shallow", input_shape=(32, 32, 1), seed=4)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 32, 32, 1)).astype(np.float32)
    vol = np.full(6, 15.0)
    emb, prob = embed_slices(encoder_model(model), x, batch_size=8)
    e = SliceEmbeddings(emb, prob, np.array(["p"] * 6), vol, "head_relu", "h")
    bags = make_bags(e.participant_id, ["p"])
    z = np.hstack([pool_fixed(emb, bags, "volume_sum", slice_weights(e, "volume_sum")),
                   lesion_extent(e, bags)[:, None]])  # fmt: skip
    y = np.arange(14) // 2 % 6  # no mRS 6: merged, probability 0
    head = fit_ordinal_head(z + rng.normal(0, 1, (14, z.shape[1])), y, l2=1.0, levels=range(7))
    bag = build_bag_model(model, head, "volume_sum")
    p_bag = bag.predict([x[None], vol[None]], verbose=0)
    assert np.abs(p_bag - head.predict_proba(z)).max() < 1e-5
    bag.save(tmp_path / "model.keras")
    card = {"architecture": "mil-ordinal", "input_shape": [None, 32, 32, 1],
            "classes": [f"mRS {k}" for k in range(7)]}  # fmt: skip
    (tmp_path / "card.json").write_text(json.dumps(card))
    again = load_model(tmp_path)
    assert np.abs(again.predict([x[None], vol[None]], verbose=0) - p_bag).max() < 1e-7


def test_bag_cam_store_is_a_cam_store(tmp_path):
    from hypo.cam import CamStore
    from hypo.cam.bag import bag_cam_store, bag_cams
    from hypo.nets import build_model

    model = build_model("shallow", input_shape=(32, 32, 1), seed=5)
    rng = np.random.default_rng(9)
    sizes = [3, 4, 5]
    pids = np.repeat(["a", "b", "c"], sizes)
    table = pd.DataFrame({"participant_id": pids, "slice": np.arange(12), "pixel_mm_row": 1.0,
                          "pixel_mm_col": 1.0, "out_rows": 32, "out_cols": 32,
                          "slice_thickness_mm": 5.0})  # fmt: skip
    store = SimpleNamespace(images=rng.normal(size=(12, 32, 32)).astype(np.float32), table=table)
    head = fit_ordinal_head(rng.normal(size=(14, 129)), np.arange(14) // 2, l2=1.0,
                            levels=range(7))  # fmt: skip
    cs = bag_cam_store(model, store, head, "mean", tmp_path / "cams", layer="block2_relu",
                       chunk_size=5)  # fmt: skip
    again = CamStore.open(tmp_path / "cams")
    assert again.complete and again.n_slices == 12 and again.classes == (0,)
    rows = np.flatnonzero(pids == "b")
    direct = bag_cams(model, store.images[rows][..., None], np.full(4, 5.12), head, "mean",
                      ("block2_relu",), resize=False)["block2_relu"]  # fmt: skip
    assert np.allclose(cs.maps("gradcampp", rows, resized=False), direct.raw["gradcampp"])
    assert np.allclose(cs.logits[rows, 0], direct.provenance["eta"])
