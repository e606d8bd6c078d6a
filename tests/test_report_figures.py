"""plotnine figures (Grotta bars, forest plot, feature by mRS) and CAM panels."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from hypo.report.cam_panels import CamExample, cam_panel_figure, write_cam_panels
from hypo.report.figures import (
    MRS_LEVELS,
    feature_by_mrs,
    forest_data,
    forest_plot,
    grotta_bars,
    grotta_data,
    or_convention,
    readable_feature,
    write_figures,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIRECTION = "OR > 1: higher (worse) mRS per 1 SD of feature"


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture
def patients() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 31
    df = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(n)],
            "asymmetry_index": rng.normal(size=n),
            "mrs_3months": rng.integers(0, 7, n).astype(float),
        }
    )
    df.loc[[2, 5], "mrs_3months"] = np.nan
    df.loc[7, "asymmetry_index"] = np.nan
    return df


@pytest.fixture
def results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "hypothesis": ["H1", "H2", "H3", "H1"],
            "model": ["mrs", "mrs", "mrs", "mrs"],
            "feature": ["asymmetry_index", "relevance_mass", "edge_density", "asymmetry_index"],
            "term": ["asymmetry_index", "relevance_mass", "edge_density", "asymmetry_index"],
            "OR": [1.6, 0.8, np.nan, 1.05],
            "OR_low": [1.2, 0.6, np.nan, 0.8],
            "OR_high": [2.1, 1.1, np.nan, 1.4],
            "direction": [DIRECTION] * 4,
            "map_source": ["cam", "cam", "cam", "shuffled_labels"],
            "error": ["", "", "did not converge", ""],
        }
    )


def test_grotta_shares_sum_to_one_per_tertile(patients):
    d = grotta_data(patients, "asymmetry_index")
    known = patients["asymmetry_index"].notna() & patients["mrs_3months"].notna()
    assert d["group_index"].nunique() == 3
    assert set(d["mrs"]) == set(MRS_LEVELS)  # empty grades kept as zero rows
    sums = d.groupby("group_index")["share"].sum()
    np.testing.assert_allclose(sums, 1.0)
    assert d.groupby("group_index")["n"].sum().sum() == known.sum()
    np.testing.assert_allclose(d.groupby("group_index")["end"].max(), 1.0)
    # Tertile 1 holds the lowest feature values: its count matches a hand split.
    x = patients.loc[known, "asymmetry_index"]
    lo = (x <= x.quantile(1 / 3)).sum()
    assert d.loc[d["group_index"] == 0, "n_group"].iloc[0] == lo


def test_grotta_segments_end_exactly_at_one():
    # 26 patients split 4/5/8/2/3/3/1 over mRS 0-6: the float running sum of the shares
    # ends at 1.0000000000000002, outside the axis limits, and plotnine dropped the bar's
    # last segment (mRS 6) with a "Removed rows" warning.
    one = np.repeat(np.arange(7), [4, 5, 8, 2, 3, 3, 1])
    df = pd.DataFrame({"mrs_3months": np.r_[one, one], "x": np.arange(52.0)})
    d = grotta_data(df, "x", n_groups=2)  # two halves of 26, each split as above
    assert d.groupby("group_index")["n"].sum().tolist() == [26, 26]
    assert (d["end"] <= 1.0).all() and (d["start"] >= 0.0).all()
    assert (d.groupby("group_index")["end"].max() == 1.0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grotta_bars(df, "x", n_groups=2).draw()


def test_grotta_bars_writes_png_and_names_missing_column(patients, tmp_path):
    out = tmp_path / "fig" / "grotta.png"
    grotta_bars(patients, "asymmetry_index", path=out)
    assert _is_png(out)
    with pytest.raises(ValueError, match="'lesion_asymmetry'"):
        grotta_bars(patients, "lesion_asymmetry")
    bad = patients.copy()
    bad.loc[0, "mrs_3months"] = 9
    with pytest.raises(ValueError, match="mrs_3months"):
        grotta_data(bad, "asymmetry_index")
    flat = patients.assign(asymmetry_index=0.25)
    with pytest.raises(ValueError, match="single value"):
        grotta_data(flat, "asymmetry_index")


def test_forest_plot_lists_failed_fits(results, tmp_path):
    d = forest_data(results)
    assert len(d) == 4 and d["label"].nunique() == 4  # every result has its own row
    assert list(d["estimated"]) == [True, True, False, True]
    assert "did not converge" in d.loc[2, "note"]
    # The same hypothesis on a negative-control map is named by its source.
    assert "shuffled_labels" in str(d.loc[3, "label"])
    out = tmp_path / "forest.png"
    plot = forest_plot(results, path=out)
    assert _is_png(out)
    assert DIRECTION in plot.labels.x
    with pytest.raises(ValueError, match="OR_high"):
        forest_plot(results.drop(columns="OR_high"))
    # A failed fit has no direction (test_hypotheses leaves it empty): the shared direction
    # still goes to the axis title, and labels stay short.
    r = results.copy()
    r.loc[2, "direction"] = ""
    assert DIRECTION in forest_plot(r).labels.x
    assert not forest_data(r)["label"].astype(str).str.contains("|", regex=False).any()
    r.loc[3, "direction"] = "OR > 1: lower (better) mRS per 1 SD of feature"
    labels = forest_data(r)["label"].astype(str)
    assert labels.str.contains(DIRECTION, regex=False).sum() == 2
    # hypo.stats' texts: the per-row clause differs, the OR convention is shared.
    conv = "OR > 1 means worse outcome (higher mRS)"
    r["direction"] = [f"higher {f} -> worse outcome; {conv}" for f in r["feature"]]
    assert or_convention(r.loc[0, "direction"]) == conv
    assert forest_plot(r).labels.x.endswith(conv)


def test_forest_plot_all_failed_still_draws(results, tmp_path):
    r = results.assign(OR=np.nan, OR_low=np.nan, OR_high=np.nan)
    out = tmp_path / "forest_failed.png"
    forest_plot(r, path=out)
    assert _is_png(out)


def test_feature_by_mrs_writes_png(patients, tmp_path):
    out = tmp_path / "by_mrs.png"
    plot = feature_by_mrs(patients, "asymmetry_index", path=out)
    assert _is_png(out)
    assert "3 without feature or outcome" in plot.labels.caption
    with pytest.raises(ValueError, match="'nope'"):
        feature_by_mrs(patients, "nope")


def test_feature_by_mrs_same_seed_same_picture(patients, tmp_path):
    import cv2

    a, b, c = (tmp_path / f"{k}.png" for k in "abc")
    feature_by_mrs(patients, "asymmetry_index", seed=0, path=a, dpi=50)
    feature_by_mrs(patients, "asymmetry_index", seed=0, path=b, dpi=50)
    feature_by_mrs(patients, "asymmetry_index", seed=1, path=c, dpi=50)
    ia, ib, ic = (cv2.imread(str(p)) for p in (a, b, c))
    assert np.array_equal(ia, ib)
    assert not np.array_equal(ia, ic)  # the seed does move the jittered points


def test_write_figures_returns_relative_paths(patients, results, tmp_path):
    paths = write_figures(patients, results, ["asymmetry_index"], tmp_path, dpi=60)
    assert set(paths) == {"forest_plot", "grotta_asymmetry_index", "feature_by_mrs_asymmetry_index"}
    for rel in paths.values():
        assert not rel.is_absolute() and _is_png(tmp_path / rel)


def _example(pid="sub-001", shape=(24, 20), mrs=3.0) -> CamExample:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.exp(-((yy - 12) ** 2 + (xx - 10) ** 2) / 60.0)
    maps = {
        (m, c): np.exp(-((yy - 10) ** 2 + (xx - (5 if c == "stroke" else 15)) ** 2) / 10.0) * s
        for m, s in (("gradcam", 2.0), ("gradcam++", 1.0))
        for c in ("stroke", "no stroke")
    }
    return CamExample(
        participant_id=pid,
        image_native=np.pad(img * 255, 3),
        image_preprocessed=img,
        maps=maps,
        probabilities={"stroke": 0.9, "no stroke": 0.1},
        slice_index=7,
        mrs_3months=mrs,
        lesion_mask=((yy - 10) ** 2 + (xx - 5) ** 2) < 9,
    )


def test_cam_panels_layout_labels_and_markers(tmp_path):
    import matplotlib.pyplot as plt

    fig = cam_panel_figure([_example(), _example("sub-002", mrs=np.nan)])
    try:
        axes = np.array(fig.axes[:12]).reshape(2, 6)  # then one colour bar per method
        assert axes[0, 2].get_title() == "Grad-CAM\nstroke"
        assert axes[0, 3].get_title() == "Grad-CAM++\nstroke"
        assert axes[0, 2].get_xlabel() == "p(stroke) = 0.90"
        assert axes[0, 4].get_xlabel() == "p(no stroke) = 0.10"
        assert "sub-002" in axes[1, 0].get_ylabel() and "slice 7" in axes[1, 0].get_ylabel()
        assert axes[1, 0].get_xlabel() == "mRS n/a"
        # Radiological view: "R" on the image's left (x < 0.5), "L" on its right.
        marks = {t.get_text(): t.get_position()[0] for t in axes[0, 3].texts}
        assert marks["R"] < 0.5 < marks["L"]
        bars = [a.get_ylabel() for a in fig.axes[12:]]
        assert bars == [
            "Grad-CAM, raw (shared by its panels)",
            "Grad-CAM++, raw (shared by its panels)",
        ]
        # Raw maps: one colour scale per method, shared across patients and classes
        # (Grad-CAM peaks at 2, ++ at 1: one scale for both would fade the smaller one).
        assert axes[0, 2].images[1].get_clim() == axes[1, 4].images[1].get_clim()
        assert axes[0, 3].images[1].get_clim() == axes[1, 5].images[1].get_clim()
        assert axes[0, 2].images[1].get_clim() != axes[0, 3].images[1].get_clim()
    finally:
        plt.close(fig)
    fig = cam_panel_figure([_example()], classes=["stroke"], scale="per_image")
    try:
        assert "per-image" in fig.axes[-1].get_ylabel()
        assert fig.axes[2].images[1].get_array().max() == pytest.approx(1.0)
    finally:
        plt.close(fig)
    # A cohort scale per method, or one number for all.
    fig = cam_panel_figure([_example()], vmin=0.0, vmax={"gradcam": 4.0, "gradcam++": 0.5})
    try:
        assert fig.axes[2].images[1].get_clim() == (0.0, 4.0)
        assert fig.axes[3].images[1].get_clim() == (0.0, 0.5)
        assert "cohort scale" in fig.axes[-1].get_ylabel()
    finally:
        plt.close(fig)
    out = write_cam_panels(tmp_path / "cams.png", [_example()], dpi=50)
    assert _is_png(out)


def test_cam_panels_reject_wrong_shapes_and_missing_maps():
    ex = _example()
    ex.maps[("gradcam", "stroke")] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"sub-001.*gradcam.*stroke.*shape"):
        cam_panel_figure([ex])
    ex = _example()
    with pytest.raises(ValueError, match="hirescam"):
        cam_panel_figure([ex], methods=("hirescam",))
    with pytest.raises(ValueError, match="scale"):
        cam_panel_figure([_example()], scale="zscore")


def test_readable_feature_names():
    assert readable_feature("stroke__edge_density_ratio__cam") == (
        "edge density ratio (stroke model, CAM)"
    )
    assert readable_feature("mrs__asymmetry_ipsi_contra__control_uniform") == (
        "asymmetry ipsi contra (mrs model, control: uniform)"
    )
    assert readable_feature("asymmetry_index") == "asymmetry_index"
