"""Reproducibility of explanations (paper appendix, Figure 16): two seeds, one data set.

The paper trained two models "under the same conditions" and showed, by eye, that their
Grad-CAMs of class "Stroke" look alike on three MRIs, while the maps of "no Stroke" --
whose probability was near zero -- looked like artefacts. hypo trains the GAP model twice
on the same patients, split and settings with two training seeds, computes Grad-CAM (and
Grad-CAM++) of every class on every test slice with both, and measures per slice and class:

- ``spearman_raw``: Spearman rank correlation of the two maps at layer resolution (the
  maps as the models made them);
- ``spearman_brain``: the same on the input-size maps, brain pixels only (background
  pixels would agree trivially);
- ``top_k_overlap``: share of the first model's most relevant ``--top-fraction`` of brain
  pixels that are also among the second model's (1 = the same pixels, the fraction itself
  = chance);

then summarises them by class and by the class's predicted probability (mean of the two
models), because a map of a class the model gives ~0 probability has little to explain.

Settings as :mod:`analyses.model_debugging` (CPU default: 96 px, 150 patients of the
development cohort, 5 epochs; ``--full``: 192 px, all patients, 100 epochs; ``--quick``
for tests). Models are cached and resumed like there.

    python -m analyses.reproducibility                   # CPU setting
    python -m analyses.reproducibility --seeds 0 1 --full
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from analyses._experiment import ExperimentError, experiment_parser, stage, write_experiment  # noqa: E402
from analyses.model_debugging import (  # noqa: E402
    add_setting_options,
    describe_setting,
    member_folder,
    models_root,
    n_boot_of,
    native_slice,
    setting_from_args,
    store_images,
    test_rows,
    train_member,
    training_cohort,
    training_store,
    truth_brain,
)
from hypo._util import file_hash, rng_for  # noqa: E402

NAME = "reproducibility"
#: Bins of a class's predicted probability (mean of the two models).
PROBABILITY_BINS = (0.0, 0.1, 0.5, 0.9, 1.0)


def top_k_overlap(a: np.ndarray, b: np.ndarray, region: np.ndarray, fraction: float) -> np.ndarray:
    """Share of ``a``'s top ``fraction`` of ``region`` pixels that are also ``b``'s top.

    ``a``, ``b``: maps ``(n, *spatial)``; ``region``: bool masks of the same shape. Ties are
    broken in a fixed (raster) order. NaN where either map is constant in the region.
    """
    n = len(a)
    a = np.asarray(a, np.float64).reshape(n, -1)
    b = np.asarray(b, np.float64).reshape(n, -1)
    r = np.asarray(region, bool).reshape(n, -1)
    out = np.full(n, np.nan)
    for i in range(n):
        ai, bi = a[i, r[i]], b[i, r[i]]
        k = int(np.ceil(fraction * ai.size))
        if k < 1 or np.ptp(ai) == 0 or np.ptp(bi) == 0:
            continue
        ta = np.argsort(-ai, kind="stable")[:k]
        tb = np.argsort(-bi, kind="stable")[:k]
        out[i] = len(np.intersect1d(ta, tb)) / k
    return out


def spearman_in_region(a, b, region) -> np.ndarray:
    """Spearman correlation of matching maps over each map's ``region`` pixels."""
    from hypo.cam.sanity import spearman_per_map

    n = len(a)
    a = np.asarray(a, np.float64).reshape(n, -1)
    b = np.asarray(b, np.float64).reshape(n, -1)
    r = np.asarray(region, bool).reshape(n, -1)
    return np.array([spearman_per_map(a[i, r[i]][None], b[i, r[i]][None])[0] for i in range(n)])


def similarity_table(res_a, res_b, region, class_names, fraction: float) -> pd.DataFrame:
    """One row per (method, slice, class): the two models' probabilities and similarities."""
    from hypo.cam.sanity import spearman_per_map

    rows = []
    n = res_a.probabilities.shape[0]
    for m in res_a.methods:
        for j, c in enumerate(res_a.classes):
            ra, rb = res_a.raw[m][:, j], res_b.raw[m][:, j]
            fa, fb = res_a[m][:, j], res_b[m][:, j]
            d = pd.DataFrame(
                {
                    "method": m,
                    "image": np.arange(n),
                    "class": class_names[c],
                    "p_model_1": res_a.probabilities[:, c],
                    "p_model_2": res_b.probabilities[:, c],
                    "spearman_raw": spearman_per_map(ra.reshape(n, -1), rb.reshape(n, -1)),
                    "spearman_brain": spearman_in_region(fa, fb, region),
                    "top_k_overlap": top_k_overlap(fa, fb, region, fraction),
                }
            )
            rows.append(d)
    out = pd.concat(rows, ignore_index=True)
    out["p_mean"] = (out["p_model_1"] + out["p_model_2"]) / 2
    labels = [f"{lo:g}-{hi:g}" for lo, hi in zip(PROBABILITY_BINS[:-1], PROBABILITY_BINS[1:])]
    out["probability_bin"] = pd.cut(out["p_mean"], list(PROBABILITY_BINS), labels=labels,
                                    include_lowest=True).astype(str)  # fmt: skip
    return out


def summarise(sim: pd.DataFrame) -> pd.DataFrame:
    """Median and quartiles of each similarity by method, class and probability bin."""
    rows = []
    for (m, c, b), g in sim.groupby(["method", "class", "probability_bin"], sort=True):
        row = {"method": m, "class": c, "probability_bin": b, "n_slices": len(g)}
        for col in ("spearman_raw", "spearman_brain", "top_k_overlap"):
            v = g[col].dropna()
            row[f"{col}_n"] = len(v)
            row[f"{col}_median"] = v.median() if len(v) else np.nan
            row[f"{col}_q1"] = v.quantile(0.25) if len(v) else np.nan
            row[f"{col}_q3"] = v.quantile(0.75) if len(v) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _box_figure(sim: pd.DataFrame, path: Path) -> Path:
    import plotnine as p9

    from hypo.report.figures import save_figure

    d = sim[sim["method"] == "gradcam"].dropna(subset=["spearman_brain"])
    fig = (
        p9.ggplot(d, p9.aes("probability_bin", "spearman_brain"))
        + p9.geom_hline(yintercept=0, linetype="dashed", colour="grey")
        + p9.geom_boxplot(outlier_size=0.5)
        + p9.facet_wrap("~class")
        + p9.labs(
            x="predicted probability of the class (mean of both models)",
            y="Spearman rho of the two\nmodels' Grad-CAMs (brain)",
            title="Same data, two training seeds",
        )  # fmt: skip
        + p9.theme_bw()
    )
    return save_figure(fig, path, width=7, height=3.6)


def _panels(cohort, store, rows, res_a, res_b, labels, path: Path, names=("A", "B")) -> Path:
    from hypo.report.cam_panels import write_cam_panels

    t = store.table
    classes = [str(c) for c in labels]
    examples = []
    for i, r in enumerate(rows):
        pid, k = str(t["participant_id"].iloc[r]), int(t["slice"].iloc[r])
        native = native_slice(cohort, pid, k)
        for name, res, idx in ((names[0], res_a, i), (names[1], res_b, i)):
            examples.append(
                {
                    "participant_id": pid,
                    "image_native": native,
                    "image_preprocessed": np.asarray(store.images[r]),
                    "maps": {("gradcam", c): res["gradcam"][idx, j] for j, c in enumerate(classes)},
                    "probabilities": {
                        c: float(res.probabilities[idx, j]) for j, c in enumerate(classes)
                    },  # fmt: skip
                    "slice_index": k,
                    "lesion_mask": np.asarray(store.masks["lesion"][r]) > 0
                    if "lesion" in store.masks
                    else None,
                    "model": name,
                }
            )
    return write_cam_panels(path, examples, classes=classes, methods=("gradcam",), scale="raw")


def main(argv: list[str] | None = None) -> int:
    from hypo.cam import compute

    p = experiment_parser(NAME, __doc__, model=None)
    add_setting_options(p)
    p.add_argument("--architecture", default="gap", choices=["gap", "shallow", "dense", "flat"])
    p.add_argument("--seeds", type=int, nargs=2, default=[0, 1], metavar=("A", "B"),
                   help="training seeds of the two models (equal seeds: a determinism check)")  # fmt: skip
    p.add_argument("--methods", nargs="+", default=["gradcam", "gradcampp"])
    p.add_argument("--top-fraction", type=float, default=0.1,
                   help="share of brain pixels in the top-k overlap")  # fmt: skip
    p.add_argument("--max-slices", type=int, default=600,
                   help="test slices compared (seeded draw; 0 = all)")  # fmt: skip
    args = p.parse_args(argv)
    started = time.perf_counter()
    q = args.quiet
    try:
        if not 0 < args.top_fraction <= 1:
            raise ExperimentError(f"--top-fraction {args.top_fraction}: expected (0, 1]")
        setting = setting_from_args(args)
        cohort = training_cohort(args, progress=not q)
        store = training_store(cohort, setting, progress=not q)
    except (ExperimentError, ValueError, FileNotFoundError) as e:
        print(f"[{NAME}] error: {e}", file=sys.stderr)
        return 2
    root = models_root(store, setting)
    members = []
    for i, s in enumerate(args.seeds, start=1):
        folder = member_folder(root, args.architecture, s)
        stage(NAME, f"training model {i} ({args.architecture}, seed {s})", q)
        m = train_member(store, folder, args.architecture, setting, seed=s,
                         n_boot=n_boot_of(args), quiet=q, label=f"model {i} (seed {s})")  # fmt: skip
        stage(NAME, f"model {i}: {'reused' if m.reused else 'trained'} -> {m.folder}", q)
        members.append(m)
    a, b = members
    if a.card["test_patients"] != b.card["test_patients"]:
        raise AssertionError("the two models were tested on different patients")

    rows, y = test_rows(store, a.card)
    if args.max_slices and len(rows) > args.max_slices:
        keep = rng_for(setting.seed, "slices").choice(len(rows), args.max_slices, replace=False)
        rows, y = rows[np.sort(keep)], y[np.sort(keep)]
    x = store_images(store, rows)
    brain = truth_brain(store, rows)
    region = brain if brain is not None else np.abs(x[..., 0]) > 0
    stage(NAME, f"CAMs of both models on {len(rows)} test slices", q)
    kw = dict(layer=a.card["cam_layer"], methods=tuple(args.methods), resize=True)
    res_a, res_b = compute(a.model, x, **kw), compute(b.model, x, **kw)
    sim = similarity_table(res_a, res_b, region, list(a.card["classes"]), args.top_fraction)
    t = store.table
    sim.insert(1, "participant_id", t["participant_id"].astype(str).to_numpy()[rows][sim["image"]])
    sim.insert(2, "slice", t["slice"].to_numpy()[rows][sim["image"]])
    sim.insert(3, "lesion_visible", y[sim["image"]] == 1)
    summary = summarise(sim)
    pred_a, pred_b = res_a.probabilities.argmax(1), res_b.probabilities.argmax(1)
    agreement = pd.DataFrame(
        {
            "model": [a.label, b.label, "both"],
            "accuracy": [(pred_a == y).mean(), (pred_b == y).mean(), np.nan],
            "same_prediction": [np.nan, np.nan, (pred_a == pred_b).mean()],
            "n_slices": len(y),
            "sha256": [
                file_hash(a.folder / "model.keras"),
                file_hash(b.folder / "model.keras"),
                "",
            ],  # fmt: skip
        }
    )

    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures = []
    if sim["spearman_brain"].notna().any() and "gradcam" in args.methods:
        _box_figure(sim, out / "figures" / "similarity.png")
        figures.append(("figures/similarity.png", "Spearman rho of the two models' Grad-CAMs "
                        "(input size, brain pixels) by class and the class's predicted "
                        "probability; 0 = unrelated maps, 1 = same ranking."))  # fmt: skip
    les = np.flatnonzero(y == 1)
    if len(les) and "gradcam" in args.methods:
        pick = les[np.argsort(-res_a.probabilities[les, 1], kind="stable")[:3]]
        _panels(cohort, store, rows[pick], _Subset(res_a, pick), _Subset(res_b, pick),
                a.card["classes"], out / "figures" / "cam_panels.png", (a.label, b.label))  # fmt: skip
        figures.append(("figures/cam_panels.png", "Like the paper's Figure 16: Grad-CAM of "
                        "each class for three test lesion slices, the two models in turn "
                        "(raw maps, one shared colour scale)."))  # fmt: skip

    synthetic = " (synthetic: generated by hypo, not patient data)" if cohort.is_synthetic else ""
    mode = "--quick (test setting)" if args.quick else "--full (paper setting)" if args.full \
        else "CPU setting (smaller than the paper's)"  # fmt: skip
    gc = summary[summary["method"] == "gradcam"]
    sections = [
        {"heading": "Setting", "paragraphs": [
            f"Mode: {mode}. " + describe_setting(cohort, store, setting, a.card),
            f"Two `{args.architecture}` models, training seeds {args.seeds[0]} and "
            f"{args.seeds[1]}, identical data, split and settings{synthetic}. Maps: "
            f"{', '.join(args.methods)} of every class from the pre-softmax score at "
            f"`{a.card['cam_layer']}`, {len(rows)} test slices. Top-k overlap: top "
            f"{args.top_fraction:.0%} of brain pixels"
            + (" (ground-truth brain)" if brain is not None else " (non-zero pixels)") + ".",
        ]},
        {"heading": "Similarity of the two models' maps", "tables": [
            (gc if len(gc) else summary, "Median [quartiles] per class and probability bin "
             "(Grad-CAM); NaN-free counts in *_n (a constant map has no ranking)."),
            (agreement, "Predictions of the two models on the same slices.")]},
        {"heading": "Figures", "figures": figures},
    ]  # fmt: skip
    provenance = {
        "setting": asdict(setting),
        "models": {m.label: {"folder": str(m.folder), "seed": m.seed, "reused": m.reused,
                             "sha256": file_hash(m.folder / "model.keras")} for m in members},
        "cohort": {"id": cohort.cohort_id, "content_hash": store.cohort_hash,
                   "slice_store": store.path.name, "synthetic": bool(cohort.is_synthetic)},
    }  # fmt: skip
    write_experiment(out, NAME, tables={NAME: summary, "similarity": sim,
                                        "agreement": agreement},
                     sections=sections, config=vars(args), intro=[__doc__.split("\n\n")[0]],
                     extra_provenance=provenance, started=started)  # fmt: skip
    stage(NAME, f"report -> {out / 'report.md'}", q)
    return 0


class _Subset:
    """Rows ``idx`` of a CamResult's maps and probabilities (for the panel figure)."""

    def __init__(self, res, idx):
        self.probabilities = res.probabilities[idx]
        self._maps = {m: res[m][idx] for m in res.methods}

    def __getitem__(self, method):
        return self._maps[method]


if __name__ == "__main__":
    raise SystemExit(main())
