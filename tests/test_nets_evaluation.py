import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from hypo.intervals import wilson_ci
from hypo.nets.evaluation import (
    cluster_bootstrap_ci,
    evaluate_mrs,
    evaluate_stroke,
    markdown_table,
    table2,
    table3,
)


def synthetic(n_pat=30, per=10, seed=0):
    rng = np.random.default_rng(seed)
    pid = np.repeat([f"p{i:02d}" for i in range(n_pat)], per)
    y = (rng.random(len(pid)) < 0.3).astype(int)
    p1 = np.clip(0.45 * y + 0.55 * rng.random(len(pid)), 0, 1)  # imperfect classifier
    return y, np.c_[1 - p1, p1], pid


@pytest.mark.parametrize("k,n", [(0, 10), (7, 10), (940, 1000), (5, 5)])
def test_wilson_equals_statsmodels(k, n):
    assert wilson_ci(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"))


def test_cluster_bootstrap_seeded_and_patient_sensitive():
    y, p, pid = synthetic()
    c = (p.argmax(1) == y).astype(int)
    a = cluster_bootstrap_ci(c, np.ones_like(c), pid, 300, seed=1)
    assert a == cluster_bootstrap_ci(c, np.ones_like(c), pid, 300, seed=1)
    # Percentiles of k/300 are coarse, so one other seed may tie; five cannot all tie.
    others = [cluster_bootstrap_ci(c, np.ones_like(c), pid, 300, seed=s) for s in range(2, 7)]
    assert any(o != a for o in others)
    assert a[0] <= c.mean() <= a[1]
    # Perfectly correlated slices within a patient: the clustered interval is wider
    # than the Wilson interval that treats 300 slices as independent.
    pid = np.repeat(np.arange(30), 10)
    c = np.repeat(np.arange(30) % 2, 10)
    lo, hi = cluster_bootstrap_ci(c, np.ones_like(c), pid, 500, seed=0)
    wl, wh = wilson_ci(c.sum(), len(c))
    assert hi - lo > 1.5 * (wh - wl)


def test_stroke_metrics_match_definitions():
    y, p, pid = synthetic()
    ev = evaluate_stroke(y, p, pid, n_boot=100)
    pred = (p[:, 1] >= 0.5).astype(int)
    assert ev.metric("accuracy") == pytest.approx((pred == y).mean())
    assert ev.metric("sensitivity") == pytest.approx(pred[y == 1].mean())
    assert ev.metric("specificity") == pytest.approx(1 - pred[y == 0].mean())
    assert ev.metric("balanced_accuracy") == pytest.approx(
        (ev.metric("sensitivity") + ev.metric("specificity")) / 2
    )
    nll = -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1)))
    assert ev.metric("nll") == pytest.approx(nll)
    row = ev.image.set_index("metric").loc["accuracy"]
    assert (row["wilson_low"], row["wilson_high"]) == pytest.approx(
        proportion_confint(row["k"], row["n"], method="wilson")
    )
    # Patient level: a patient is positive if any slice is; score is the max probability.
    per = pd.DataFrame({"pid": pid, "y": y, "p": p[:, 1]}).groupby("pid").max()
    assert ev.metric("accuracy", "patient") == pytest.approx(
        ((per["p"] >= 0.5) == (per["y"] == 1)).mean()
    )


def test_sensitivity_by_volume_bins():
    y, p, pid = synthetic()
    vol = pd.Series({f"p{i:02d}": (0.5 if i < 15 else 30.0) for i in range(30)})
    ev = evaluate_stroke(y, p, pid, lesion_volume_ml=vol, n_boot=50)
    t = ev.by_volume.set_index("volume_bin")
    small = (y == 1) & np.isin(pid, vol.index[vol < 1])
    assert t.loc["0-1 mL", "n_lesion_slices"] == small.sum()
    assert t.loc["0-1 mL", "image_sensitivity"] == pytest.approx((p[small, 1] >= 0.5).mean())
    with pytest.raises(ValueError, match="no lesion volume"):
        evaluate_stroke(y, p, pid, lesion_volume_ml=vol.iloc[:3])


def test_mrs_per_class_and_tables(tmp_path):
    rng = np.random.default_rng(0)
    pid = np.repeat([f"p{i}" for i in range(20)], 8)
    y = rng.integers(0, 3, len(pid))
    p = rng.dirichlet(np.ones(3), len(pid))
    p[np.arange(len(y)), y] += 1
    p /= p.sum(1, keepdims=True)
    ev = evaluate_mrs(y, p, pid, n_boot=50)
    for k, name in enumerate(("no stroke", "mRS 0-2", "mRS 3-6")):
        assert ev.metric(f"sensitivity {name}") == pytest.approx((p[y == k].argmax(1) == k).mean())
    t3 = table3(ev)
    assert t3["Metric"].str.contains('Accuracy "mRS 3-6"').any()
    ev.write(tmp_path)
    assert (tmp_path / "evaluation_image.csv").exists()
    assert "| metric |" in (tmp_path / "evaluation.md").read_text()


def test_mrs_patient_level_by_hand():
    # Four patients, two slices each (probabilities: no stroke, mRS 0-2, mRS 3-6).
    pid = np.repeat(["a", "b", "c", "d"], 2)
    y = np.array([0, 0, 1, 0, 2, 2, 1, 1])
    p = np.array([
        [0.9, 0.05, 0.05], [0.8, 0.1, 0.1],  # a: no lesion, none called -> no stroke (right)
        [0.2, 0.7, 0.1], [0.9, 0.05, 0.05],  # b: mRS 0-2, called lesion, odds 0.125 -> 0-2 (right)
        [0.1, 0.3, 0.6], [0.1, 0.5, 0.4],    # c: mRS 3-6, odds 0.667 and 0.444 -> mean 0.56 -> 3-6
        [0.9, 0.05, 0.05], [0.6, 0.2, 0.2],  # d: mRS 0-2, nothing called -> no stroke (wrong)
    ])  # fmt: skip
    ev = evaluate_mrs(y, p, pid, n_boot=20)
    t = ev.patient.set_index("metric")
    assert t.loc["accuracy", "estimate"] == pytest.approx(3 / 4)
    assert t.loc["sensitivity no stroke", "estimate"] == 1.0
    assert t.loc["sensitivity mRS 0-2", "estimate"] == pytest.approx(1 / 2)
    assert t.loc["sensitivity mRS 3-6", "estimate"] == 1.0
    # Lesion patients scored by their lesion slices: b 0.125, d 0.5, c 0.556 -> AUC 1.
    assert t.loc["auc_mrs_3_6_vs_0_2", "estimate"] == 1.0
    assert t.loc["auc_mrs_3_6_vs_0_2", "n"] == 3
    assert ev.card_metrics()["patient_level"]["sensitivity mRS 0-2"] == pytest.approx(0.5)


def test_table2_shape_and_markdown():
    y, p, pid = synthetic()
    t = table2({"GAP-Model": evaluate_stroke(y, p, pid, n_boot=20)})
    assert list(t.columns)[:4] == [
        "Architecture",
        "Accuracy [95% Conf.]",
        "Sensitivity [95% Conf.]",
        "Specificity [95% Conf.]",
    ]
    md = markdown_table(t)
    assert md.count("\n") == 3 and "GAP-Model" in md


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="expected n labels"):
        evaluate_stroke([0, 1], np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        evaluate_mrs([0, 5], np.full((2, 3), 1 / 3), ["a", "b"])
