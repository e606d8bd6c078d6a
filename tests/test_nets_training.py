import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hypo.nets.data import AugmentConfig, make_dataset  # noqa: E402
from hypo.nets.splits import patient_split  # noqa: E402
from hypo.nets.training import Interrupt, TrainConfig, train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def tiny_data(n_patients=12, per=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    pid = np.repeat([f"sub-{i:02d}" for i in range(n_patients)], per)
    group = np.where(np.arange(n_patients) % 3 == 0, "TIA", "stroke")[np.arange(len(pid)) // per]
    y = ((group == "stroke") & (np.arange(len(pid)) % per >= per // 2)).astype(int)
    x = rng.normal(size=(len(pid), size, size)).astype("float32")
    x[y == 1, 8:16, 18:26] += 3.0  # a bright "lesion" on the patient's left
    table = pd.DataFrame({"participant_id": pid, "group": group, "lesion_visible": y})
    return x, y, pid, table


CFG = dict(architecture="shallow", epochs=3, batch_size=16, patience=50)


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    x, y, pid, table = tiny_data(size=16)
    split = patient_split(table, seed=0)
    cfg = TrainConfig(**CFG, augment=AugmentConfig(), negative_fraction=0.8)
    seen = {}

    class Peek(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.update(json.loads((tmp_path / "full/run.json").read_text()))

    full = train(x, y, pid, split, tmp_path / "full", cfg, verbose=0, callbacks=[Peek()],
                 provenance={"cohort_hash": "abc", "generator_hash": "gen123"})  # fmt: skip
    # run.json exists before the first step and records the choices made.
    assert seen["provenance"]["generator_hash"] == "gen123"
    assert seen["horizontal_flip"] is False
    assert seen["negative_subsampling"] == 0.8
    assert set(seen["class_weights"]) == {"0", "1"}
    assert seen["split"]["test"] == list(split.test)

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise Interrupt("killed after epoch 1")

    with pytest.raises(Interrupt):
        train(x, y, pid, split, tmp_path / "killed", cfg, verbose=0, callbacks=[Kill()])
    state = json.loads((tmp_path / "killed/checkpoint/state.json").read_text())
    assert state["next_epoch"] == 1
    resumed = train(x, y, pid, split, tmp_path / "killed", cfg, verbose=0, resume=True)
    assert len(resumed.history) == len(full.history) == 3
    for a, b in zip(full.final_weights, resumed.final_weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        full.history["loss"].to_numpy(), resumed.history["loss"].to_numpy(), rtol=1e-6
    )
    # Training actually moved the weights (the comparison above is not vacuous).
    init = keras.models.clone_model(full.model).get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(full.final_weights, init))


def test_resume_with_no_epoch_left_finalises_with_best_weights(tmp_path):
    # Stopping a long run early: kill it, then resume with --epochs equal to the epochs done.
    x, y, pid, table = tiny_data(size=16)
    split = patient_split(table, seed=0)
    cfg = TrainConfig(**CFG, augment=AugmentConfig(enabled=False))

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupt("killed after epoch 2")

    with pytest.raises(Interrupt):
        train(x, y, pid, split, tmp_path / "r", cfg, verbose=0, callbacks=[Kill()])
    short = TrainConfig(**{**CFG, "epochs": 2}, augment=AugmentConfig(enabled=False))
    done = train(x, y, pid, split, tmp_path / "r", short, verbose=0, resume=True)
    assert len(done.history) == 2
    best = int(done.history["val_loss"].idxmin())
    assert done.best_epoch == best
    uninterrupted = train(x, y, pid, split, tmp_path / "u", short, verbose=0)
    for a, b in zip(uninterrupted.model.get_weights(), done.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_early_stopping_restores_best_epoch(tmp_path):
    x, y, pid, table = tiny_data(size=16)
    split = patient_split(table, seed=1)
    cfg = TrainConfig(**{**CFG, "epochs": 4, "patience": 1}, augment=AugmentConfig(enabled=False))
    r = train(x, y, pid, split, tmp_path / "r", cfg, verbose=0)
    best = int(r.history["val_loss"].idxmin())
    assert r.best_epoch == best
    assert len(r.history) <= 4
    val = split.indices(pid)["val"]
    loss = keras.losses.CategoricalCrossentropy()(
        np.eye(2)[y[val]], r.model.predict(x[val][..., None], verbose=0)
    )
    assert float(loss) == pytest.approx(r.history["val_loss"].min(), rel=1e-4)


def test_dataset_is_deterministic_and_flip_off_by_default():
    x, y, pid, _ = tiny_data()
    rows = np.arange(len(y))

    def batches(aug, first=0):
        ds = make_dataset(x, y, rows, 16, shuffle=True, augment=aug, seed=3, epochs=(first, 3))
        return [b[0].numpy() for b in ds.take(3 * 5)]

    aug = AugmentConfig()
    a, b = batches(aug), batches(aug)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], a[5])  # epochs differ
    assert AugmentConfig().horizontal_flip is False
    # Flip only, no other transform: with the flag on, some batch is mirrored.
    flip = AugmentConfig(rotation_deg=0, shift=0, zoom=0, horizontal_flip=True)
    plain = AugmentConfig(enabled=False)
    f, p = batches(flip), batches(plain)
    assert all(np.array_equal(u, v) for u, v in zip(batches(plain), p))
    mirrored = [np.any(np.all(fb == pb[:, :, ::-1], axis=(1, 2, 3))) for fb, pb in zip(f, p)]
    assert any(mirrored)


def test_bad_inputs_raise():
    x, y, pid, table = tiny_data()
    split = patient_split(table, seed=0)
    with pytest.raises(ValueError, match="expected"):
        train(x[:-1], y, pid, split, "/nonexistent", TrainConfig(**CFG))
    with pytest.raises(ValueError, match="do not match patient_ids"):
        train(x, y, np.array(["zz"] * len(y)), split, "/nonexistent", TrainConfig(**CFG))
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig(strategy="multiworker")


def fake_store(tmp_path, size=32, with_mrs=True):
    x, y, pid, table = tiny_data(n_patients=15, size=size)
    from hypo.preprocess import PreprocessConfig

    t = table.copy()
    rng = np.random.default_rng(1)
    mrs = {p: float(rng.integers(0, 7)) for p in np.unique(pid)}
    mrs["sub-04"] = np.nan
    t["mrs_3months"] = [mrs[p] for p in pid] if with_mrs else np.nan
    t["lesion_area_mm2"] = np.where(y == 1, 40.0, 0.0)
    t["slice_thickness_mm"] = 6.0
    return SimpleNamespace(
        images=x,
        table=t,
        cohort_id="fake",
        cohort_hash="cafe",
        config=PreprocessConfig(size=size),
        meta={"generator_hash": "g42"},
        path=tmp_path / "store",
    )


@pytest.mark.parametrize("model", ["shallow", "mrs"])
def test_train_models_cli_writes_model_card_and_tables(tmp_path, model):
    from analyses.train_models import main
    from hypo.nets.io import load_model

    out = tmp_path / model
    size = 32 if model == "mrs" else 16
    argv = ["--model", model, "--size", str(size), "--epochs", "1", "--batch-size", "16",
            "--out", str(out), "--quiet", "--n-boot", "20"]  # fmt: skip
    store = fake_store(tmp_path, size)
    card = main(argv, store=store)
    m = load_model(out)
    assert m.hypo_card == card
    assert card["cohort"] == {"id": "fake", "hash": "cafe", "generator_hash": "g42"}
    assert card["command"].startswith("python -m analyses.train_models --model " + model)
    test = card["metrics"]["test"]
    for k in ("accuracy", "accuracy_ci", "nll"):
        assert k in test
    assert not set(card["train_patients"]) & set(card["test_patients"])
    if model == "mrs":
        assert card["classes"] == ["no stroke", "mRS 0-2", "mRS 3-6"]
        assert card["excluded_patients"] == ["sub-04"]
        assert "sub-04" not in card["train_patients"] + card["val_patients"]
        assert "sensitivity mRS 3-6" in test
        assert (out / "evaluation.md").read_text().count("mRS 0-2") >= 1
    else:
        for k in ("sensitivity", "specificity", "auc"):
            assert k in test
        assert (out / "evaluation_by_volume.csv").exists()
    assert not (out / "run/checkpoint").exists()
    assert (out / "run/run.json").exists()
    # The shipped model re-evaluated from its folder gives the card's numbers again.
    from hypo.study.assess import evaluate_on_store

    again = evaluate_on_store(m, store, model, card["test_patients"], tmp_path / "again", n_boot=20)
    assert again.card_metrics()["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6)
    assert again.card_metrics()["nll"] == pytest.approx(test["nll"], rel=1e-4)
    if model == "mrs":
        assert "sensitivity mRS 3-6" in test["patient_level"]
        assert "## Patient level" in (out / "evaluation.md").read_text()
    with pytest.raises(ValueError, match="none of the 1 test patients"):
        evaluate_on_store(m, store, model, ["sub-nobody"], tmp_path / "none")


MIRRORED = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.path.insert(0, sys.argv[1])
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tests.test_nets_training import tiny_data
    from hypo.nets.splits import patient_split
    from hypo.nets.training import TrainConfig, train
    x, y, pid, table = tiny_data(size=16)
    cfg = TrainConfig(architecture="shallow", epochs=1, batch_size=16, strategy="mirrored")
    r = train(x, y, pid, patient_split(table, seed=0), sys.argv[2], cfg, verbose=0)
    print("REPLICAS", tf.distribute.MirroredStrategy().num_replicas_in_sync)
    print("EPOCHS", len(r.history))
    """
)


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(REPO), str(tmp_path / "m")],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "REPLICAS 2" in res.stdout
    assert "EPOCHS 1" in res.stdout


def test_assess_cli_refuses_a_card_without_its_split(tmp_path, capsys, tiny_cohort):
    import json

    from hypo.study.assess import main

    d = tmp_path / "model"
    d.mkdir()
    (d / "card.json").write_text(json.dumps({"architecture": "gap", "classes": ["a", "b"]}))
    assert main([str(d)]) == 2
    err = capsys.readouterr().err
    assert "card.json" in err and "test_patients" in err
    # A card of another cohort: refused by cohort id, naming both.
    card = {"architecture": "gap", "classes": ["a", "b"], "test_patients": ["sub-01"],
            "train_patients": ["sub-02"], "preprocessing": {"size": 32},
            "cohort": {"id": "dev-elsewhere"}}  # fmt: skip
    (d / "card.json").write_text(json.dumps(card))
    assert main([str(d), "--cohort", str(tiny_cohort)]) == 2
    err = capsys.readouterr().err
    assert "dev-elsewhere" in err and "--cohort" in err


def test_init_from_copies_matching_layers_only(tmp_path):
    from hypo.nets import build_model
    from hypo.nets.io import make_card, save_model
    from hypo.nets.training import _init_from

    src = build_model("gap", input_shape=(32, 32, 1), n_classes=2, seed=1)
    save_model(src, tmp_path / "src", make_card("gap", src, ["no stroke", "stroke"]))
    dst = build_model("mrs", input_shape=(32, 32, 1), n_classes=3, seed=2)
    before = {la.name: [w.copy() for w in la.get_weights()] for la in dst.layers}
    n = _init_from(dst, str(tmp_path / "src"), (32, 32, 1))
    assert n > 0
    conv = dst.get_layer("block1_conv")
    np.testing.assert_array_equal(conv.get_weights()[0], src.get_layer(conv.name).get_weights()[0])
    # Five conv + five BatchNorm blocks and the head's BatchNorm; the 3-class logits
    # do not match the 2-class ones and keep their own initialisation.
    assert n == 11
    for a, b in zip(dst.get_layer("logits").get_weights(), before["logits"]):
        np.testing.assert_array_equal(a, b)


def test_init_from_refuses_a_model_that_saw_the_test_patients(tmp_path):
    from analyses.train_models import main

    store = fake_store(tmp_path, 32)
    base = ["--size", "32", "--epochs", "1", "--batch-size", "16", "--quiet", "--n-boot", "10"]
    mrs = main(["--model", "mrs", *base, "--out", str(tmp_path / "mrs")], store=store)
    # A stroke backbone trained without leaving the mRS test patients out saw some of them.
    main(["--model", "gap", *base, "--out", str(tmp_path / "gap_all")], store=store)
    with pytest.raises(SystemExit, match="of this run's test patients"):
        main(["--model", "mrs", *base, "--init-from", str(tmp_path / "gap_all"),
              "--out", str(tmp_path / "mrs2")], store=store)  # fmt: skip
    # Trained with the mRS test patients left out, it may start the mRS model.
    gap = main(["--model", "gap", *base, "--exclude-test-of", str(tmp_path / "mrs"),
                "--out", str(tmp_path / "gap_ex")], store=store)  # fmt: skip
    seen = set(gap["train_patients"]) | set(gap["val_patients"]) | set(gap["test_patients"])
    assert not seen & set(mrs["test_patients"])
    assert gap["left_out_patients"] == sorted(mrs["test_patients"])
    card = main(["--model", "mrs", *base, "--init-from", str(tmp_path / "gap_ex"),
                 "--out", str(tmp_path / "mrs3")], store=store)  # fmt: skip
    assert card["init_from"] == str(tmp_path / "gap_ex")
    assert card["test_patients"] == mrs["test_patients"]  # the same split


def tiny_mrs_data(n_patients=24, per=6, size=16, seed=0):
    """3-class mRS-style slices: patients alternate between the outcome groups, and the
    poor-outcome group's lesions are larger (the lesion area is the aux target)."""
    rng = np.random.default_rng(seed)
    pid = np.repeat([f"sub-{i:02d}" for i in range(n_patients)], per)
    k = np.arange(len(pid)) // per
    poor = k % 2 == 1
    lesion = np.arange(len(pid)) % per >= per // 2
    y = np.where(lesion, np.where(poor, 2, 1), 0)
    x = rng.normal(size=(len(pid), size, size)).astype("float32")
    side = np.where(poor, 6, 3)
    for i in np.flatnonzero(lesion):
        x[i, 2 : 2 + side[i], 2 : 2 + side[i]] += 3.0
    area = np.where(lesion, side.astype(float) ** 2, 0.0)
    table = pd.DataFrame(
        {
            "participant_id": pid,
            "group": "stroke",
            "mrs_3months": np.where(poor, 4.0, 1.0),
            "lesion_visible": lesion.astype(int),
            "lesion_area_mm2": area,
        }
    )
    return x, y, pid, table


def test_aux_lesion_area_head_trains_resumes_and_stays_out_of_the_saved_model(tmp_path):
    from hypo.nets.io import load_model, make_card, save_model
    from hypo.nets.training import lesion_area_targets

    x, y, pid, table = tiny_mrs_data()
    split = patient_split(table, seed=0, stratify=("mrs_group",))
    aux = lesion_area_targets(table)
    np.testing.assert_allclose(aux, np.log1p(table["lesion_area_mm2"]))
    cfg = TrainConfig(architecture="shallow", epochs=3, batch_size=16, patience=50,
                      augment=AugmentConfig(enabled=False), aux_lesion_area=1.0,
                      monitor="val_outcome_auc")  # fmt: skip
    full = train(x, y, pid, split, tmp_path / "full", cfg, n_classes=3, verbose=0, aux_targets=aux)
    h = full.history
    assert {"lesion_area_loss", "probabilities_loss", "val_outcome_auc"} <= set(h.columns)
    assert h["lesion_area_loss"].iloc[-1] < h["lesion_area_loss"].iloc[0]
    assert h["val_outcome_auc"].between(0, 1).all()
    # Best weights follow the outcome AUC (higher is better), first maximum on ties.
    assert full.best_epoch == int(h["val_outcome_auc"].to_numpy().argmax())
    # The returned model is the class model alone: one output, no lesion_area layer.
    assert full.model.output.shape[-1] == 3
    assert "lesion_area" not in [layer.name for layer in full.model.layers]
    card = make_card("shallow", full.model, ("a", "b", "c"), split=split)
    save_model(full.model, tmp_path / "saved", card)
    back = load_model(tmp_path / "saved")
    np.testing.assert_allclose(
        back.predict(x[:8, ..., None], verbose=0),
        full.model.predict(x[:8, ..., None], verbose=0),
        atol=1e-6,
    )

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise Interrupt("killed after epoch 1")

    with pytest.raises(Interrupt):
        train(x, y, pid, split, tmp_path / "k", cfg, n_classes=3, verbose=0, aux_targets=aux,
              callbacks=[Kill()])  # fmt: skip
    resumed = train(
        x, y, pid, split, tmp_path / "k", cfg, n_classes=3, verbose=0, aux_targets=aux, resume=True
    )
    for a, b in zip(full.final_weights, resumed.final_weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert resumed.best_epoch == full.best_epoch


def test_aux_and_monitor_bad_inputs_raise(tmp_path):
    from hypo.nets.training import lesion_area_targets

    x, y, pid, table = tiny_mrs_data()
    split = patient_split(table, seed=0, stratify=("mrs_group",))
    with pytest.raises(ValueError, match="aux target"):
        train(x, y, pid, split, tmp_path / "a", TrainConfig(**CFG, aux_lesion_area=1.0),
              n_classes=3)  # fmt: skip
    with pytest.raises(ValueError, match="3-class"):
        x2, y2, pid2, t2 = tiny_data()
        train(x2, y2, pid2, patient_split(t2, seed=0), tmp_path / "b",
              TrainConfig(**CFG, monitor="val_outcome_auc"))  # fmt: skip
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="accuracy")
    with pytest.raises(ValueError, match="lesion_area_mm2"):
        lesion_area_targets(table.drop(columns="lesion_area_mm2"))
    holes = table.assign(lesion_area_mm2=np.where(table["lesion_visible"] == 1, np.nan, 0.0))
    with pytest.raises(ValueError, match="sub-"):
        lesion_area_targets(holes)
