import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hypo.nets.architectures import build_model  # noqa: E402
from hypo.nets.io import load_model, make_card, save_model  # noqa: E402
from hypo.nets.splits import PatientSplit  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "gap"
    m = build_model("gap", (32, 32, 1), seed=0)
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype("float32")
    m.fit(x, np.eye(2)[[0, 1, 0, 1]], verbose=0)  # creates optimizer state
    split = PatientSplit(("a", "b"), ("c",), ("d",), seed=3, stratified_by=("group",))
    card = make_card("gap", m, ["no stroke", "stroke"], split=split,
                     cohort={"id": "c", "hash": "h", "generator_hash": "g"},
                     metrics={"test": {"accuracy": 0.5}}, command="python -m x")  # fmt: skip
    save_model(m, out, card)
    return out, m, x, card


def test_round_trip_safe_mode_with_card(saved):
    out, m, x, card = saved
    loaded = load_model(out)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    assert loaded.hypo_card == card
    assert isinstance(loaded.hypo_card, dict)
    json.dumps(loaded.hypo_card)
    assert card["cam_layer"] == "block5_relu"
    assert card["test_patients"] == ["d"] and card["split_seed"] == 3
    # The file itself loads with safe_mode=True and carries no optimizer.
    raw = keras.models.load_model(out / "model.keras", safe_mode=True)
    assert getattr(raw, "optimizer", None) is None
    assert load_model(out / "model.keras").hypo_card == card


def test_gap_runs_at_other_sizes_flatten_does_not(saved, tmp_path):
    out, m, x, _ = saved
    big = load_model(out, input_shape=(64, 64, 1))
    assert big.input_shape == (None, 64, 64, 1)
    assert big.hypo_card["architecture"] == "gap"
    np.testing.assert_array_equal(big.get_weights()[0], m.get_weights()[0])
    with pytest.raises(ValueError, match="multiple of 32"):
        load_model(out, input_shape=(48, 48, 1))
    d = build_model("flat", (32, 32, 1))
    save_model(d, tmp_path / "flat", {"architecture": "flat", "classes": ["a", "b"]})
    with pytest.raises(ValueError, match="Flatten"):
        load_model(tmp_path / "flat", input_shape=(64, 64, 1))


def test_bad_files_raise_clear_errors(saved, tmp_path):
    out, m, _, card = saved
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.keras").write_text("not a model")
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="not a Keras model"):
        load_model(bad)
    nocard = tmp_path / "nocard"
    nocard.mkdir()
    (nocard / "model.keras").write_bytes((out / "model.keras").read_bytes())
    with pytest.raises(FileNotFoundError, match="no model card"):
        load_model(nocard)
    (nocard / "card.json").write_text(json.dumps({**card, "architecture": "resnet"}))
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        load_model(nocard)
    with pytest.raises(ValueError, match="classes"):
        save_model(m, tmp_path / "x", {"architecture": "gap", "classes": ["a", "b", "c"]})
