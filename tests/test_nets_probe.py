import os
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from hypo.nets.cards import leaked_patients  # noqa: E402
from hypo.nets.probe import PARTS, linear_probe, probe_parts, to_markdown  # noqa: E402


def fake_parts(n_patients=(60, 30, 30), per=5, k=40, signal=1.0, seed=0):
    """Per-slice features: column 0 carries the log lesion area, which carries outcome;
    the rest is noise."""
    rng = np.random.default_rng(seed)
    parts = {}
    for name, n in zip(PARTS, n_patients):
        poor = np.repeat(rng.random(n) < 0.4, per)
        area = rng.normal(size=n * per) + signal * poor
        f = rng.normal(size=(n * per, k))
        f[:, 0] = area + 0.1 * rng.normal(size=n * per)
        pid = np.repeat([f"{name}-{i}" for i in range(n)], per)
        parts[name] = {"features": f, "y": poor, "area": area, "patients": pid}
    return parts


def test_linear_probe_finds_the_signal_and_scores_the_floor():
    parts = fake_parts()
    t = linear_probe(parts, cs=(0.001, 0.1, 10.0))
    assert len(t) == 4 * 3  # three penalties + the lesion-area floor, on three parts
    chosen = t[t["chosen"]]
    assert chosen["C"].nunique() == 1 and len(chosen) == 3
    val = t[(t["part"] == "val") & t["C"].notna()]
    assert chosen[chosen["part"] == "val"]["auc"].iloc[0] == val["auc"].max()
    floor = t[(t["probe"] == "lesion area") & (t["part"] == "test")].iloc[0]
    test = parts["test"]
    assert floor["auc"] == pytest.approx(roc_auc_score(test["y"], test["area"]))
    assert floor["r_log_area"] == pytest.approx(1.0)
    assert floor["n_patients"] == 30 and floor["n_slices"] == 150
    # The signal column is found: the chosen probe ranks test outcome well and follows area.
    best = chosen[chosen["part"] == "test"].iloc[0]
    assert best["auc"] > 0.65 and best["r_log_area"] > 0.5
    md = to_markdown(t, "probe")
    assert "| lesion area |" in md and " * |" in md


def test_linear_probe_on_noise_is_near_chance():
    parts = fake_parts(signal=0.0, seed=3)
    for p in parts.values():
        p["features"][:, 0] = np.random.default_rng(9).normal(size=len(p["y"]))
    t = linear_probe(parts, cs=(0.01, 1.0))
    test = t[(t["part"] == "test") & t["C"].notna()]
    assert (test["auc"] - 0.5).abs().max() < 0.15
    train = t[(t["part"] == "train") & (t["C"] == 1.0)]["auc"].iloc[0]
    assert train > 0.6  # it fits the training slices all the same


def test_probe_bad_inputs_and_leak_check():
    parts = fake_parts()
    with pytest.raises(ValueError, match="missing"):
        linear_probe({"train": parts["train"], "val": parts["val"]})
    one = {**parts, "train": {**parts["train"], "y": np.zeros_like(parts["train"]["y"])}}
    with pytest.raises(ValueError, match="one outcome group"):
        linear_probe(one)
    card = {"train_patients": ["a", "b"], "val_patients": ["c"]}
    assert leaked_patients(card, {"test_patients": ["c", "d"]}) == ["c"]
    assert leaked_patients(card, {"test_patients": ["d"]}) == []


def test_probe_parts_reads_the_layer_on_lesion_slices_with_mrs():
    from hypo.nets.architectures import build_model

    rng = np.random.default_rng(0)
    pid = np.repeat(["p1", "p2", "p3", "p4"], 4)
    table = pd.DataFrame(
        {
            "participant_id": pid,
            "lesion_visible": np.tile([0, 1, 1, 0], 4),
            "lesion_area_mm2": np.tile([0.0, 30.0, 50.0, 0.0], 4),
            "mrs_3months": np.repeat([1.0, 4.0, np.nan, 2.0], 4),
        }
    )
    store = SimpleNamespace(
        images=rng.normal(size=(16, 16, 16)).astype("float32"), table=table, path="fake"
    )
    model = build_model("shallow", (16, 16, 1), n_classes=3, seed=0)
    parts = probe_parts(
        model, "head_relu", store, {"train": ["p1"], "val": ["p2"], "test": ["p4", "p3"]}
    )
    assert parts["train"]["features"].shape == (2, 128)
    assert parts["test"]["patients"].tolist() == ["p4", "p4"]  # p3 has no mRS
    assert parts["val"]["y"].all() and not parts["train"]["y"].any()
    np.testing.assert_allclose(parts["train"]["area"], np.log1p([30.0, 50.0]))
    with pytest.raises(ValueError, match="no layer 'nope'"):
        probe_parts(model, "nope", store, {"train": ["p1"], "val": ["p2"], "test": ["p4"]})
