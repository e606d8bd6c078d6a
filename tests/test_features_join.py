"""Per-patient aggregation, data dictionary, join report and the leakage guard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hypo.features.aggregate import (
    MAP_FEATURES,
    aggregate_patients,
    data_dictionary,
    write_patient_tables,
)
from hypo.features.join import (
    JoinError,
    LeakageError,
    flag_training_patients,
    join_participants,
    require_held_out,
)


def slice_table(pids=("sub-1", "sub-2"), n_slices=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    k = 0
    for p in pids:
        for s in range(n_slices):
            for cls in (0, 1):
                r = {c: rng.random() for c in MAP_FEATURES}
                r.update(
                    store_index=k,
                    participant_id=p,
                    slice=s,
                    map_source="cam",
                    method="gradcam",
                    layer="block5",
                    class_index=cls,
                    cell_mm=12.0,
                    map_mass_brain=float(s + 1),
                    lesion_area_mm2=100.0 if s == 1 else 0.0,
                    lesion_volume_ml=0.5 if s == 1 else 0.0,
                    lesion_image_area_mm2=90.0 if s == 1 else 0.0,
                    lesion_left_px=40 if s == 1 else 0,
                    lesion_right_px=0,
                    brain_area_mm2=1000.0,
                    ventricle_area_left_mm2=10.0,
                    ventricle_area_right_mm2=30.0,
                    septum_shift_mm=1.0 + s,
                    midline_angle_deg=2.0,
                    slice_thickness_mm=5.0,
                    lesion_visible=int(s == 1),
                )
                rows.append(r)
            k += 1
    return pd.DataFrame(rows)


def test_mass_weighted_means_and_counts():
    df = slice_table()
    pt = aggregate_patients(df, cohort_id="c1")
    assert len(pt) == 4  # 2 patients x 2 classes
    one = pt[(pt.participant_id == "sub-1") & (pt.class_index == 0)].iloc[0]
    sl = df[(df.participant_id == "sub-1") & (df.class_index == 0)]
    w = sl["map_mass_brain"].to_numpy()
    for f in ("asymmetry_index", "entropy_norm"):
        assert one[f + "_all"] == pytest.approx(np.sum(w * sl[f]) / w.sum())
        assert one[f + "_lesion"] == pytest.approx(sl[f].iloc[1])  # the one lesion slice
    assert one["n_slices"] == 3 and one["n_lesion_slices"] == 1
    assert one["lesion_volume_ml"] == pytest.approx(0.5)
    assert one["lesion_side"] == "left"
    assert one["ventricle_asymmetry"] == pytest.approx(-0.5)
    assert one["any_lesion_visible"] == 1


def test_nan_slices_do_not_count_and_zero_mass_gives_nan():
    df = slice_table(pids=("sub-1",))
    df.loc[df["slice"] == 0, "asymmetry_index"] = np.nan
    df.loc[df["class_index"] == 1, "map_mass_brain"] = 0.0
    pt = aggregate_patients(df, cohort_id="c1").set_index("class_index")
    sl = df[(df.class_index == 0) & (df["slice"] > 0)]
    w = sl["map_mass_brain"]
    assert pt.loc[0, "asymmetry_index_all"] == pytest.approx(
        (w * sl.asymmetry_index).sum() / w.sum()
    )
    assert np.isnan(pt.loc[1, "asymmetry_index_all"])


def test_dictionary_and_outputs(tmp_path):
    pt = aggregate_patients(slice_table(), cohort_id="c1")
    dic = data_dictionary(pt.columns)
    assert not (dic["definition"] == "(not documented)").any(), dic[
        dic.definition == "(not documented)"
    ]
    paths = write_patient_tables(pt, tmp_path)
    for p in paths.values():
        assert p.exists()
    corr = pd.read_csv(paths["correlation"], index_col=0)
    assert (np.diag(corr.to_numpy()) == 1).all()
    assert (
        "cell_mm" in paths["dictionary_md"].read_text()
        and "interpolation" in paths["dictionary_md"].read_text()
    )


def participants(ids=("sub-1", "sub-2", "sub-3")):
    return pd.DataFrame(
        {"group": ["stroke", "TIA", "stroke"], "mrs_3months": [1.0, np.nan, 3.0]},
        index=pd.Index(list(ids), name="participant_id"),
    )


def test_join_reports_unmatched_and_missing(capsys):
    pt = aggregate_patients(slice_table(("sub-1", "sub-2", "sub-9")), cohort_id="c1")
    res = join_participants(pt, participants(), cohort_id="c1")
    t, rep = res.table, res.report
    assert t["participant_id"].is_unique and len(t) == 4  # nobody dropped
    issues = set(zip(rep["issue"], rep["participant_id"]))
    assert ("only_in_features", "sub-9") in issues
    assert ("only_in_participants", "sub-3") in issues
    assert ("missing_value", "sub-2") in issues
    assert "only_in_features" in capsys.readouterr().out
    t = t.set_index("participant_id")
    assert t.loc["sub-1", "analysis_population"]  # stroke + visible lesion + features
    assert not t.loc["sub-2", "analysis_population"]  # TIA
    assert not t.loc["sub-3", "analysis_population"]  # no features
    assert not t.loc["sub-9", "in_participants"]
    # One column per feature and map.
    assert "asymmetry_index_all__cam_gradcam_block5_c1" in t.columns


def test_join_errors(tmp_path):
    pt = aggregate_patients(slice_table(), cohort_id="c1")
    with pytest.raises(ValueError, match="participant_id"):
        join_participants(pt, participants().reset_index(drop=True), cohort_id="c1")
    dup = pd.concat([participants(), participants().iloc[:1]])
    with pytest.raises(JoinError, match="duplicate") as e:
        join_participants(pt, dup, cohort_id="c1", verbose=False)
    assert "duplicate_in_participants" in set(e.value.report["issue"])
    with pytest.raises(ValueError, match="cohort"):
        join_participants(pt, participants(), cohort_id="other", verbose=False)
    res = join_participants(pt, participants(), cohort_id="c1", verbose=False)
    paths = res.write(tmp_path)
    back = pd.read_parquet(paths["parquet"])
    assert len(back) == len(res.table)


def test_leakage_guard_keys_on_cohort_and_patient(tmp_path):
    pt = aggregate_patients(slice_table(), cohort_id="c1")
    card = {"cohort": {"id": "c1"}, "train_patients": ["sub-1"], "val_patients": [],
            "test_patients": ["sub-2"]}  # fmt: skip
    (tmp_path / "card.json").write_text(json.dumps(card))
    res = join_participants(pt, participants(), cohort_id="c1", model_cards=tmp_path, verbose=False)
    t = res.table.set_index("participant_id")
    assert t.loc["sub-1", "in_model_training"] and not t.loc["sub-2", "in_model_training"]
    with pytest.raises(LeakageError, match="sub-1"):
        require_held_out(res.table)
    assert len(require_held_out(res.table, allow_training_patients=True)) == len(res.table)
    # Same patient number in another cohort: not the model's training patient.
    other = flag_training_patients(pt.assign(cohort_id="c2"), card)
    assert not other["in_model_training"].any()
    # Validation patients drove early stopping: they count as training.
    val = flag_training_patients(pt, {**card, "train_patients": [], "val_patients": ["sub-2"]})
    assert set(val.loc[val.in_model_training, "participant_id"]) == {"sub-2"}
    with pytest.raises(LeakageError, match="in_model_training"):
        require_held_out(pt)
