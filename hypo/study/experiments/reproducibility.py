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

Settings as :mod:`hypo.study.experiments.model_debugging` (CPU default: 96 px, 150 patients of the
development cohort, 5 epochs; ``--full``: 192 px, all patients, 100 epochs; ``--quick``
for tests). Models are cached and resumed like there.

Command line: ``python -m analyses.reproducibility``; in a notebook
``reproducibility.run(RunSettings(out=...), TrainingSetting(), ReproducibilityConfig())``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotnine as p9

from hypo._util import file_hash, rng_for
from hypo.cam import compute
from hypo.cam.sanity import spearman_per_map
from hypo.report.cam_panels import write_cam_panels
from hypo.report.figures import save_figure
from hypo.study.experiments.frame import (
    ExperimentError,
    RunSettings,
    stage,
    store_brain,
    store_images,
    write_experiment,
)
from hypo.study.experiments.training import (
    CPU,
    TrainingSetting,
    describe_setting,
    member_model_dir,
    mode_label,
    models_root,
    native_slice,
    spearman_in_region,
    test_rows,
    train_member,
    training_cohort,
    training_store,
)

NAME = "reproducibility"
#: Bins of a class's predicted probability (mean of the two models).
PROBABILITY_BINS = (0.0, 0.1, 0.5, 0.9, 1.0)


@dataclass(frozen=True)
class ReproducibilityConfig:
    """What the experiment trains and compares.

    Parameters
    ----------
    architecture : str
        The architecture trained twice.
    seeds : tuple of int
        Training seeds of the two models (equal seeds: a determinism check).
    methods : tuple of str
        CAM methods compared.
    top_fraction : float
        Share of brain pixels in the top-k overlap, in (0, 1].
    max_slices : int
        Test slices compared (seeded draw; 0 = all).
    n_boot : int
        Bootstrap replicates of the models' evaluation.
    full : bool
        The run uses the paper's setting (named in the report).
    """

    architecture: str = "gap"
    seeds: tuple[int, int] = (0, 1)
    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    top_fraction: float = 0.1
    max_slices: int = 600
    n_boot: int = 2000
    full: bool = False

    def __post_init__(self):
        if not 0 < self.top_fraction <= 1:
            raise ExperimentError(f"--top-fraction {self.top_fraction}: expected (0, 1]")


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


def similarity_table(res_a, res_b, region, class_names, fraction: float) -> pd.DataFrame:
    """One row per (method, slice, class): the two models' probabilities and similarities."""
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
    out["probability_bin"] = pd.cut(
        out["p_mean"], list(PROBABILITY_BINS), labels=labels, include_lowest=True
    ).astype(str)
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
        )
        + p9.theme_bw()
    )
    return save_figure(fig, path, width=7, height=3.6)


def _panels(cohort, store, rows, res_a, res_b, labels, path: Path, names=("A", "B")) -> Path:
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
                    },
                    "slice_index": k,
                    "lesion_mask": np.asarray(store.masks["lesion"][r]) > 0
                    if "lesion" in store.masks
                    else None,
                    "model": name,
                }
            )
    return write_cam_panels(path, examples, classes=classes, methods=("gradcam",), scale="raw")


class _Subset:
    """Rows ``idx`` of a CamResult's maps and probabilities (for the panel figure)."""

    def __init__(self, res, idx):
        self.probabilities = res.probabilities[idx]
        self._maps = {m: res[m][idx] for m in res.methods}

    def __getitem__(self, method):
        return self._maps[method]


# --------------------------------------------------------------------------- steps


def train_pair(store, setting: TrainingSetting, cfg: ReproducibilityConfig, quiet: bool):
    """The two models (trained, or reused from the shared model cache)."""
    root = models_root(store, setting)
    members = []
    for i, s in enumerate(cfg.seeds, start=1):
        model_dir = member_model_dir(root, cfg.architecture, s)
        stage(NAME, f"training model {i} ({cfg.architecture}, seed {s})", quiet)
        m = train_member(
            store,
            model_dir,
            cfg.architecture,
            setting,
            seed=s,
            n_boot=cfg.n_boot,
            quiet=quiet,
            label=f"model {i} (seed {s})",
        )
        stage(NAME, f"model {i}: {'reused' if m.reused else 'trained'} -> {m.model_dir}", quiet)
        members.append(m)
    if members[0].card["test_patients"] != members[1].card["test_patients"]:
        raise AssertionError("the two models were tested on different patients")
    return members


def compare_maps(store, a, b, setting, cfg: ReproducibilityConfig, quiet: bool) -> dict:
    """Both models' maps on the (sampled) test slices, compared slice by slice."""
    rows, y = test_rows(store, a.card)
    if cfg.max_slices and len(rows) > cfg.max_slices:
        keep = rng_for(setting.seed, "slices").choice(len(rows), cfg.max_slices, replace=False)
        rows, y = rows[np.sort(keep)], y[np.sort(keep)]
    x = store_images(store, rows)
    brain = store_brain(store, rows, derive=False)[0]
    region = brain if brain is not None else np.abs(x[..., 0]) > 0
    stage(NAME, f"CAMs of both models on {len(rows)} test slices", quiet)
    kw = dict(layer=a.card["cam_layer"], methods=tuple(cfg.methods), resize=True)
    res_a, res_b = compute(a.model, x, **kw), compute(b.model, x, **kw)
    sim = similarity_table(res_a, res_b, region, list(a.card["classes"]), cfg.top_fraction)
    t = store.table
    sim.insert(1, "participant_id", t["participant_id"].astype(str).to_numpy()[rows][sim["image"]])
    sim.insert(2, "slice", t["slice"].to_numpy()[rows][sim["image"]])
    sim.insert(3, "lesion_visible", y[sim["image"]] == 1)
    pred_a, pred_b = res_a.probabilities.argmax(1), res_b.probabilities.argmax(1)
    agreement = pd.DataFrame(
        {
            "model": [a.label, b.label, "both"],
            "accuracy": [(pred_a == y).mean(), (pred_b == y).mean(), np.nan],
            "same_prediction": [np.nan, np.nan, (pred_a == pred_b).mean()],
            "n_slices": len(y),
            "sha256": [
                file_hash(a.model_dir / "model.keras"),
                file_hash(b.model_dir / "model.keras"),
                "",
            ],
        }
    )
    return {
        "rows": rows,
        "y": y,
        "brain": brain,
        "res_a": res_a,
        "res_b": res_b,
        "sim": sim,
        "agreement": agreement,
    }


def _figures(out: Path, cohort, store, a, b, c: dict, cfg: ReproducibilityConfig) -> list:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures = []
    sim, y = c["sim"], c["y"]
    if sim["spearman_brain"].notna().any() and "gradcam" in cfg.methods:
        _box_figure(sim, out / "figures" / "similarity.png")
        figures.append(
            (
                "figures/similarity.png",
                "Spearman rho of the two models' Grad-CAMs "
                "(input size, brain pixels) by class and the class's predicted "
                "probability; 0 = unrelated maps, 1 = same ranking.",
            )
        )
    les = np.flatnonzero(y == 1)
    if len(les) and "gradcam" in cfg.methods:
        pick = les[np.argsort(-c["res_a"].probabilities[les, 1], kind="stable")[:3]]
        _panels(
            cohort,
            store,
            c["rows"][pick],
            _Subset(c["res_a"], pick),
            _Subset(c["res_b"], pick),
            a.card["classes"],
            out / "figures" / "cam_panels.png",
            (a.label, b.label),
        )
        figures.append(
            (
                "figures/cam_panels.png",
                "Like the paper's Figure 16: Grad-CAM of "
                "each class for three test lesion slices, the two models in turn "
                "(raw maps, one shared colour scale).",
            )
        )
    return figures


def _sections(mode, setting_txt, cohort, a, c, summary, cfg, figures) -> list:
    synthetic = " (synthetic: generated by hypo, not patient data)" if cohort.is_synthetic else ""
    gc = summary[summary["method"] == "gradcam"]
    region = " (ground-truth brain)" if c["brain"] is not None else " (non-zero pixels)"
    return [
        {
            "heading": "Setting",
            "paragraphs": [
                f"Mode: {mode}. " + setting_txt,
                f"Two `{cfg.architecture}` models, training seeds {cfg.seeds[0]} and "
                f"{cfg.seeds[1]}, identical data, split and settings{synthetic}. Maps: "
                f"{', '.join(cfg.methods)} of every class from the pre-softmax score at "
                f"`{a.card['cam_layer']}`, {len(c['rows'])} test slices. Top-k overlap: top "
                f"{cfg.top_fraction:.0%} of brain pixels" + region + ".",
            ],
        },
        {
            "heading": "Similarity of the two models' maps",
            "tables": [
                (
                    gc if len(gc) else summary,
                    "Median [quartiles] per class and probability bin "
                    "(Grad-CAM); NaN-free counts in *_n (a constant map has no ranking).",
                ),
                (c["agreement"], "Predictions of the two models on the same slices."),
            ],
        },
        {"heading": "Figures", "figures": figures},
    ]


def run(
    settings: RunSettings,
    setting: TrainingSetting = CPU,
    cfg: ReproducibilityConfig = ReproducibilityConfig(),
) -> dict:
    """Train the two models, compare their maps, write the report; return the paths."""
    started = time.perf_counter()
    q = settings.quiet
    cohort = training_cohort(settings)
    store = training_store(cohort, setting, progress=settings.progress)
    members = train_pair(store, setting, cfg, q)
    a, b = members
    c = compare_maps(store, a, b, setting, cfg, q)
    summary = summarise(c["sim"])
    out = Path(settings.out)
    figures = _figures(out, cohort, store, a, b, c, cfg)
    mode = mode_label(settings, cfg.full, "CPU setting (smaller than the paper's)")
    setting_txt = describe_setting(cohort, store, setting, a.card)
    provenance = {
        "setting": asdict(setting),
        "models": {
            m.label: {
                "folder": str(m.model_dir),
                "seed": m.seed,
                "reused": m.reused,
                "sha256": file_hash(m.model_dir / "model.keras"),
            }
            for m in members
        },
        "cohort": {
            "id": cohort.cohort_id,
            "content_hash": store.cohort_hash,
            "slice_store": store.path.name,
            "synthetic": bool(cohort.is_synthetic),
        },
    }
    paths = write_experiment(
        out,
        NAME,
        tables={NAME: summary, "similarity": c["sim"], "agreement": c["agreement"]},
        sections=_sections(mode, setting_txt, cohort, a, c, summary, cfg, figures),
        config=settings.record_of(cfg),
        intro=[__doc__.split("\n\n")[0]],
        extra_provenance=provenance,
        started=started,
    )
    stage(NAME, f"report -> {out / 'report.md'}", q)
    return paths
