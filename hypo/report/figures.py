"""plotnine figures of the main analysis: Grotta bars, forest plot, feature by mRS.

Each figure function validates its table, returns a ``plotnine.ggplot`` and, given
``path``, writes it as a PNG atomically (see :func:`save_figure`). The data each plot
draws is built by a separate ``*_data`` function so that a test or a researcher can check
the numbers behind the picture.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotnine as p9  # noqa: E402

from hypo._util import atomic_path  # noqa: E402
from hypo.report.tables import _require  # noqa: E402

MRS_LEVELS = tuple(range(7))
#: mRS 0 (no symptoms) light to mRS 6 (dead) dark: the usual Grotta bar shading.
MRS_COLOURS = ("#f7fbff", "#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c", "#08183a")
#: Segments narrower than this share get no printed percentage (it would not fit).
MIN_LABEL_SHARE = 0.06
DEFAULT_DPI = 200


def _mrs(values: pd.Series, outcome: str) -> pd.Series:
    s = pd.to_numeric(values, errors="coerce")
    bad = (s.isna() & values.notna()) | (s.notna() & ~s.isin(MRS_LEVELS))
    if bad.any():
        raise ValueError(
            f"column {outcome!r}: mRS must be an integer 0-6 or missing; found "
            f"{sorted(map(str, values[bad].unique()))}"
        )
    return s


def save_figure(
    plot: p9.ggplot,
    path: str | Path,
    width: float = 7.0,
    height: float = 4.0,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Write a ggplot to ``path`` (PNG unless the suffix says otherwise) atomically.

    Parameters
    ----------
    width, height : float
        Size in inches.
    dpi : int
        Resolution in dots per inch.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        plot.save(tmp, width=width, height=height, dpi=dpi, units="in", verbose=False)
    return path


#: Titles start at the figure's left edge and may use its whole width: centred over the
#: panel, a long feature name ran off the right edge of a Grotta figure.
TITLE_THEME = {"plot_title_position": "plot", "plot_title": p9.element_text(ha="left")}


def wrap_title(text: str, width: int = 60) -> str:
    """Break a long title at spaces so that no line is longer than ``width`` characters."""
    return "\n".join(textwrap.wrap(text, width)) or text


# --------------------------------------------------------------------------- Grotta bars
def grotta_data(
    df: pd.DataFrame, feature: str, outcome: str = "mrs_3months", n_groups: int = 3
) -> pd.DataFrame:
    """mRS distribution per quantile group of a feature (the numbers behind Grotta bars).

    Patients with a missing feature or outcome are left out. Groups are equal-count
    quantile groups (``pandas.qcut``; tied cut points merge groups, so fewer than
    ``n_groups`` can result).

    Returns
    -------
    DataFrame
        One row per group and mRS grade 0-6 (empty grades kept with ``n = 0``):
        ``group`` (ordered categorical, lowest feature values first), ``group_index``,
        ``mrs``, ``n``, ``n_group``, ``share`` (sums to 1 within a group), ``start`` and
        ``end`` (cumulative share before and after the segment).
    """
    _require(df, [feature, outcome], "grotta_data")
    x = pd.to_numeric(df[feature], errors="coerce")
    if (x.isna() & df[feature].notna()).any():
        raise ValueError(f"feature column {feature!r} is not numeric")
    y = _mrs(df[outcome], outcome)
    ok = x.notna() & y.notna() & np.isfinite(x)
    if ok.sum() < n_groups:
        raise ValueError(
            f"grotta_data: {int(ok.sum())} patients have both {feature!r} and {outcome!r}; "
            f"need at least {n_groups}"
        )
    x, y = x[ok], y[ok].astype(int)
    if x.nunique() < 2:
        raise ValueError(
            f"grotta_data: {feature!r} takes a single value ({x.iloc[0]:.3g}) in all "
            f"{len(x)} patients; there are no groups to compare"
        )
    codes, edges = pd.qcut(x, n_groups, labels=False, retbins=True, duplicates="drop")
    k = len(edges) - 1
    name = {3: "tertile", 4: "quartile", 5: "quintile"}.get(k, "group")
    labels = []
    for i in range(k):
        rank = " (lowest)" if i == 0 else (" (highest)" if i == k - 1 else "")
        n_i = int((codes == i).sum())
        labels.append(
            f"{name.capitalize()} {i + 1}{rank}: {edges[i]:.3g} to {edges[i + 1]:.3g} (n={n_i})"
        )
    counts = pd.crosstab(codes, y).reindex(index=range(k), columns=MRS_LEVELS, fill_value=0)
    rows = []
    for i in range(k):
        tot = int(counts.loc[i].sum())
        cum = 0
        for m in MRS_LEVELS:
            n = int(counts.loc[i, m])
            share = n / tot if tot else 0.0
            rows.append(
                {
                    "group": labels[i],
                    "group_index": i,
                    "mrs": m,
                    "n": n,
                    "n_group": tot,
                    "share": share,
                    # From integer counts: a float running sum can end at 1 + 1e-16,
                    # which the figure's (0, 1) axis limits would drop.
                    "start": cum / tot if tot else 0.0,
                    "end": (cum + n) / tot if tot else 0.0,
                }
            )
            cum += n
    out = pd.DataFrame(rows)
    out["group"] = pd.Categorical(out["group"], categories=labels, ordered=True)
    return out


def grotta_bars(
    df: pd.DataFrame,
    feature: str,
    outcome: str = "mrs_3months",
    n_groups: int = 3,
    feature_label: str | None = None,
    path: str | Path | None = None,
    dpi: int = DEFAULT_DPI,
) -> p9.ggplot:
    """Grotta bars: stacked 100 % bars of the mRS 0-6 distribution per feature tertile.

    mRS 0 is on the left and lightest, mRS 6 (death) on the right and darkest; each
    segment wide enough to hold it shows its share in percent. Bars run from the lowest
    feature tertile (top) to the highest (bottom).

    Parameters
    ----------
    df : DataFrame
        Patient table with ``feature`` and ``outcome``.
    feature : str
        Numeric feature column.
    outcome : str
        mRS column (0-6).
    n_groups : int
        Number of quantile groups (3 = tertiles).
    feature_label : str, optional
        Name of the feature in the title; default the column name.
    path : path, optional
        Write the figure there as PNG.
    """
    data = grotta_data(df, feature, outcome, n_groups)
    k = int(data["group_index"].max()) + 1
    data = data.assign(
        y=k - 1 - data["group_index"],  # lowest tertile at the top
        mrs_f=pd.Categorical(data["mrs"].astype(str), categories=[str(m) for m in MRS_LEVELS]),
        mid=(data["start"] + data["end"]) / 2,
        label=[f"{100 * s:.0f}%" for s in data["share"]],
        dark=data["mrs"] >= 4,
    )
    labels = data[data["share"] >= MIN_LABEL_SHARE]
    y_labels = [
        str(data.loc[(data["group_index"] == i), "group"].iloc[0]) for i in range(k - 1, -1, -1)
    ]
    plot = (
        p9.ggplot(data)
        + p9.geom_rect(
            p9.aes(xmin="start", xmax="end", ymin="y - 0.4", ymax="y + 0.4", fill="mrs_f"),
            colour="#404040",
            size=0.2,
        )
        + p9.geom_text(
            p9.aes(x="mid", y="y", label="label", colour="dark"),
            data=labels,
            size=7,
            show_legend=False,
        )
        + p9.scale_fill_manual(values=list(MRS_COLOURS), name="mRS", drop=False)
        + p9.scale_colour_manual(values={False: "black", True: "white"}, guide=None)
        + p9.scale_x_continuous(
            labels=lambda b: [f"{100 * v:.0f}%" for v in b], expand=(0, 0), limits=(0, 1)
        )
        + p9.scale_y_continuous(breaks=list(range(k)), labels=y_labels)
        + p9.labs(
            x="Share of patients (mRS at 3 months)",
            y="",
            title=wrap_title(f"mRS at 3 months by {feature_label or feature}"),
        )
        + p9.theme_bw()
        + p9.theme(legend_position="top", panel_grid=p9.element_blank(), **TITLE_THEME)
        + p9.guides(fill=p9.guide_legend(nrow=1))
    )
    if path is not None:
        save_figure(plot, path, width=8.0, height=1.2 + 0.6 * k, dpi=dpi)
    return plot


# --------------------------------------------------------------------------- forest plot
FOREST_COLUMNS = ("hypothesis", "model", "feature", "term", "OR", "OR_low", "OR_high", "direction")


def or_convention(direction) -> str:
    """The part of a ``direction`` text that says what OR > 1 means.

    hypo.stats writes e.g. "higher asymmetry_index -> worse outcome; OR > 1 means worse
    outcome (higher mRS)": the first clause describes the estimate, the clause naming the
    OR is the convention shared by the rows of one outcome coding, which is what a forest
    plot's axis must state. A text without such a clause is returned whole.
    """
    if direction is None or (isinstance(direction, float) and np.isnan(direction)):
        return ""
    text = str(direction).strip()
    clauses = [c.strip() for c in text.split(";")]
    named = [c for c in clauses if "OR" in c]
    return "; ".join(named) if named else text


_FORMULA_PREFIX = re.compile(r"formula ([\x22\x27]).*?\1: ?")


def forest_data(results: pd.DataFrame, panel: str | None = "model") -> pd.DataFrame:
    """Rows of a forest plot: one per hypothesis and term, failed fits flagged.

    ``panel`` names the facet column: row labels are unique within a panel (across the
    whole plot when None).

    Returns
    -------
    DataFrame
        The input columns plus ``label`` (row label, unique and in input order, first
        row at the top), ``estimated`` (finite positive OR and CI) and ``note`` (why a row
        has no estimate), ``or_convention`` (see :func:`or_convention`). ``map_source``
        defaults to ``"cam"`` when absent.
    """
    _require(results, FOREST_COLUMNS, "forest plot")
    d = results.copy().reset_index(drop=True)
    if "map_source" not in d.columns:
        d["map_source"] = "cam"
    d["map_source"] = d["map_source"].fillna("cam").astype(str)
    d["model"] = d["model"].fillna("").astype(str)
    for c in ("OR", "OR_low", "OR_high"):
        d[c] = pd.to_numeric(d[c], errors="coerce")
    vals = d[["OR", "OR_low", "OR_high"]].to_numpy(float)
    d["estimated"] = np.isfinite(vals).all(axis=1) & (vals > 0).all(axis=1)
    err = (
        d["error"].fillna("").astype(str) if "error" in d.columns else pd.Series("", index=d.index)
    )
    d["note"] = [
        "" if ok else (f"not estimated: {e}" if e else "not estimated")
        for ok, e in zip(d["estimated"], err)
    ]
    # Short enough to fit right of OR = 1 in the panel; the formula is in the table.
    d["note"] = [_FORMULA_PREFIX.sub("", n) for n in d["note"]]
    d["note"] = [n if len(n) <= 48 else n[:45] + "..." for n in d["note"]]
    base = d["hypothesis"].astype(str) + ": " + d["feature"].astype(str)
    multi_term = d.groupby(["hypothesis", "model", "map_source"])["term"].transform("nunique") > 1
    # The term joins the label where a fit has several and it is not the feature itself.
    named = multi_term & (d["term"].astype(str) != d["feature"].astype(str))
    base = base.where(~named, base + " [" + d["term"].astype(str) + "]")
    if "analysis" in d.columns:
        sens = d["analysis"].fillna("primary").astype(str) != "primary"
        base = base.where(~sens, base + " (" + d["analysis"].astype(str) + ")")
    d["or_convention"] = [or_convention(x) for x in d["direction"]]
    conv = d["or_convention"]
    # Failed fits carry no direction; only the stated ones decide whether rows differ.
    if conv[conv != ""].nunique() > 1:
        base = base.where(conv == "", base + " | " + conv)
    # One row per result within a model's panel: the same hypothesis on a negative-control
    # map source is named by its source; a label may repeat across model panels.
    within = d[panel].astype(str) if panel is not None else pd.Series("", index=d.index)
    dup_src = base.groupby([within, base]).transform("size") > 1
    base = base.where(~dup_src, base + " (" + d["map_source"] + ")")
    k = base.groupby([within, base]).cumcount()
    labels = [b if i == 0 else f"{b} #{i + 1}" for b, i in zip(base, k)]
    d["label"] = pd.Categorical(labels, categories=list(dict.fromkeys(labels))[::-1], ordered=True)
    return d


def forest_plot(
    results: pd.DataFrame,
    facet: str = "model",
    colour: str = "map_source",
    path: str | Path | None = None,
    dpi: int = DEFAULT_DPI,
) -> p9.ggplot:
    """Forest plot of odds ratios with 95 % CIs on a log axis, one row per hypothesis/term.

    A vertical line marks OR = 1. Rows whose fit failed (NaN OR) stay in the plot with
    the reason printed at OR = 1, so every registered test is visible. What OR > 1 means
    (e.g. "OR > 1 means worse outcome (higher mRS)", see :func:`or_convention`) is stated
    in the axis title when all rows share it, else in each row label.

    Parameters
    ----------
    results : DataFrame
        Results table of :func:`hypo.stats.registry.test_hypotheses`.
    facet : str or None
        Column to facet rows by (default ``model``); None for one panel.
    colour : str or None
        Column to colour points by (default ``map_source``: CAM vs negative controls).
    path : path, optional
        Write the figure there as PNG.
    """
    _require(results, FOREST_COLUMNS, "forest plot")
    for c in (facet, colour):
        if c is not None and c != "map_source" and c not in results.columns:
            raise ValueError(f"forest plot: column {c!r} is not in the results table")
    d = forest_data(results, panel=facet)
    conventions = [x for x in d["or_convention"].unique() if x]
    axis = "Odds ratio (95% CI, log scale)"
    if len(conventions) == 1:
        axis += "\n" + conventions[0]
    est = d[d["estimated"]]
    failed = d[~d["estimated"]].assign(x=1.0)
    aes_pt = (
        p9.aes(x="OR", y="label") if colour is None else p9.aes(x="OR", y="label", colour=colour)
    )
    aes_seg = (
        p9.aes(x="OR_low", xend="OR_high", y="label", yend="label")
        if colour is None
        else p9.aes(x="OR_low", xend="OR_high", y="label", yend="label", colour=colour)
    )
    plot = (
        p9.ggplot(d, p9.aes(y="label"))
        + p9.geom_vline(xintercept=1.0, linetype="dashed", colour="#606060")
        # The axis always spans at least 0.5-2 so that OR = 1 has context, even when
        # every fit failed.
        + p9.geom_blank(p9.aes(x="x"), data=pd.DataFrame({"x": [0.5, 2.0]}), inherit_aes=False)
        + p9.scale_x_log10()
        + p9.scale_y_discrete(drop=True)
        + p9.labs(x=axis, y="", title="Odds ratios by hypothesis")
        + p9.theme_bw()
        # Horizontal strip labels: a one-row panel ("generator") is too short for a
        # rotated one.
        + p9.theme(legend_position="bottom", strip_text_y=p9.element_text(angle=0), **TITLE_THEME)
        + p9.guides(colour=p9.guide_legend(title="map source", nrow=2))
    )
    if len(est):
        plot += p9.geom_segment(aes_seg, data=est, size=0.7)
        plot += p9.geom_point(aes_pt, data=est, size=2.2)
    if len(failed):
        plot += p9.geom_text(
            p9.aes(x="x", y="label", label="note"),
            data=failed,
            size=7,
            colour="#b00000",
            ha="left",
            nudge_x=0.02,
        )
    if facet is not None and d[facet].nunique() > 1:
        plot += p9.facet_grid(f"{facet} ~ .", scales="free_y", space="free_y")
    if path is not None:
        # Wide enough that long row labels leave the panel room for its axis title.
        longest = int(d["label"].astype(str).str.len().max()) if len(d) else 0
        width = min(max(8.0, 4.5 + 0.075 * longest), 14.0)
        save_figure(plot, path, width=width, height=1.9 + 0.32 * len(d), dpi=dpi)
    return plot


# --------------------------------------------------------------------------- feature by mRS
def feature_by_mrs(
    df: pd.DataFrame,
    feature: str,
    outcome: str = "mrs_3months",
    feature_label: str | None = None,
    seed: int = 0,
    path: str | Path | None = None,
    dpi: int = DEFAULT_DPI,
) -> p9.ggplot:
    """Box plot with jittered points of a feature per mRS grade (0-6, all grades shown).

    Patients with a missing feature or outcome are left out (their count is in the
    caption). The jitter is seeded so the same data give the same picture.
    """
    _require(df, [feature, outcome], "feature_by_mrs")
    x = pd.to_numeric(df[feature], errors="coerce")
    if (x.isna() & df[feature].notna()).any():
        raise ValueError(f"feature column {feature!r} is not numeric")
    y = _mrs(df[outcome], outcome)
    ok = x.notna() & y.notna() & np.isfinite(x)
    if not ok.any():
        raise ValueError(f"feature_by_mrs: no patient has both {feature!r} and {outcome!r}")
    d = pd.DataFrame(
        {
            "value": x[ok].to_numpy(float),
            "mrs": pd.Categorical(
                y[ok].astype(int).astype(str), categories=[str(m) for m in MRS_LEVELS]
            ),
        }
    )
    n_out = int((~ok).sum())
    plot = (
        p9.ggplot(d, p9.aes(x="mrs", y="value"))
        + p9.geom_boxplot(outlier_shape="", fill="#deebf7", width=0.6)
        + p9.geom_point(
            # plotnine treats an int seed of 0 as "no seed"; a RandomState is always used
            # (and deep-copied per draw, so every draw of this plot jitters the same).
            position=p9.position_jitter(
                width=0.15, height=0, random_state=np.random.RandomState(seed)
            ),
            size=1.2,
            alpha=0.7,
        )
        + p9.scale_x_discrete(drop=False)
        + p9.labs(
            x="mRS at 3 months",
            y=wrap_title(feature_label or feature, 32),
            title=wrap_title(f"{feature_label or feature} by mRS at 3 months", 45),
            caption=f"n = {int(ok.sum())}; {n_out} without feature or outcome left out",
        )
        + p9.theme_bw()
        + p9.theme(**TITLE_THEME)
    )
    if path is not None:
        save_figure(plot, path, width=6.0, height=4.0, dpi=dpi)
    return plot


def readable_feature(column: str) -> str:
    """``"stroke__edge_density_ratio__cam"`` -> ``"edge density ratio (stroke model, CAM)"``.

    Analysis-table columns are ``<model>__<feature>__<map source>``; anything else is
    returned unchanged.
    """
    parts = str(column).split("__")
    if len(parts) != 3:
        return str(column)
    model, feature, source = parts
    source = "CAM" if source == "cam" else source.replace("control_", "control: ").replace("_", " ")
    return f"{feature.replace('_', ' ')} ({model} model, {source})"


def write_figures(
    df: pd.DataFrame,
    results: pd.DataFrame,
    features: Sequence[str],
    out_dir: str | Path,
    outcome: str = "mrs_3months",
    dpi: int = DEFAULT_DPI,
) -> dict[str, Path]:
    """Write the standard figures of an analysis into ``out_dir/figures``.

    Returns a dict ``name -> path relative to out_dir`` for the report writer.
    """
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    rel = Path("figures") / "forest_plot.png"
    forest_plot(results, path=out_dir / rel, dpi=dpi)
    paths["forest_plot"] = rel
    for f in features:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f)
        label = readable_feature(f)
        rel = Path("figures") / f"grotta_{safe}.png"
        grotta_bars(df, f, outcome, feature_label=label, path=out_dir / rel, dpi=dpi)
        paths[f"grotta_{f}"] = rel
        rel = Path("figures") / f"feature_by_mrs_{safe}.png"
        feature_by_mrs(df, f, outcome, feature_label=label, path=out_dir / rel, dpi=dpi)
        paths[f"feature_by_mrs_{f}"] = rel
    return paths
