import numpy as np
import pandas as pd
import pytest

from hypo.nets.labels import mrs_labels, stroke_labels
from hypo.nets.splits import patient_split


def slice_table(n_patients=40, per=6, seed=0, missing_mrs=(3, 7)):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        stroke = i % 3 != 0
        mrs = np.nan if i in missing_mrs else float(rng.integers(0, 7))
        for s in range(per):
            rows.append(
                {
                    "participant_id": f"sub-{i:03d}",
                    "slice": s,
                    "group": "stroke" if stroke else "TIA",
                    "mrs_3months": mrs,
                    "lesion_visible": int(stroke and s in (2, 3)),
                }
            )
    return pd.DataFrame(rows)


def test_stroke_labels_are_the_reader_label():
    t = slice_table()
    sl = stroke_labels(t)
    np.testing.assert_array_equal(sl.y, t["lesion_visible"].to_numpy())
    assert sl.classes == ("no stroke", "stroke")


def test_mrs_labels_follow_fig6_and_drop_patients_without_mrs():
    t = slice_table()
    sl = mrs_labels(t)
    assert sl.excluded_patients == ["sub-003", "sub-007"]
    kept = t.iloc[sl.index]
    assert not kept["participant_id"].isin(sl.excluded_patients).any()
    expect = np.where(kept["lesion_visible"] == 0, 0, np.where(kept["mrs_3months"] <= 2, 1, 2))
    np.testing.assert_array_equal(sl.y, expect)
    assert set(sl.y) == {0, 1, 2}


def test_missing_lesion_labels_is_a_clear_error():
    t = slice_table()
    t["lesion_visible"] = pd.array([pd.NA] * len(t), dtype="Int64")
    with pytest.raises(ValueError, match="no lesion labels"):
        stroke_labels(t)
    with pytest.raises(ValueError, match="lacks column"):
        stroke_labels(t.drop(columns="lesion_visible"))


def test_bad_mrs_values_raise():
    t = slice_table()
    t.loc[0, "mrs_3months"] = 9
    with pytest.raises(ValueError, match="outside 0-6"):
        mrs_labels(t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patient_split_no_patient_crosses(seed):
    t = slice_table()
    sp = patient_split(t, seed=seed)
    tr, va, te = set(sp.train), set(sp.val), set(sp.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(t["participant_id"])
    idx = sp.indices(t["participant_id"].to_numpy())
    for a in idx:
        for b in idx:
            if a != b:
                pa = set(t["participant_id"].iloc[idx[a]])
                pb = set(t["participant_id"].iloc[idx[b]])
                assert not (pa & pb)
    assert sum(len(v) for v in idx.values()) == len(t)


def test_patient_split_is_seeded_and_stratified():
    t = slice_table(n_patients=60)
    a, b = patient_split(t, seed=4), patient_split(t, seed=4)
    assert a == b
    assert patient_split(t, seed=5).test != a.test
    groups = t.groupby("participant_id")["group"].first()
    share = groups.loc[list(a.test)].eq("TIA").mean()
    assert abs(share - groups.eq("TIA").mean()) < 0.1


def test_mrs_split_stratifies_by_mrs_group():
    t = slice_table(n_patients=60)
    sl = mrs_labels(t)
    sp = patient_split(t.iloc[sl.index], seed=0, stratify=("group", "mrs_group"))
    assert not set(sp.train) & set(sl.excluded_patients)
    assert sp.stratified_by == ("group", "mrs_group")


def test_split_errors_name_the_problem():
    t = slice_table()
    with pytest.raises(ValueError, match="'sex'"):
        patient_split(t, stratify=("sex",))
    t.loc[t["participant_id"] == "sub-001", "group"] = ["TIA"] + ["stroke"] * 5
    with pytest.raises(ValueError, match="varies within"):
        patient_split(t)
