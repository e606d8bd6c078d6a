"""Model debugging (paper section 4.1.4, Table 2): five architectures, one seed, one split.

The paper trained its Herzog baseline and the "Dense", "Flat", "GAP" and "Shallow" models
with the same random seed on the same training, validation and test data, reported
accuracy, sensitivity and specificity (Wilson 95 % intervals), AUC and negative
log-likelihood (Table 2), and judged each model's Grad-CAM "qualitatively good" or "poor"
by eye. hypo measures the explainability instead, on the test patients' lesion slices:

- relevance mass: share of the Grad-CAM of class "stroke" (pre-softmax score, the ReLU
  after the last convolution, resized to the input) that falls inside the lesion mask,
  counting brain pixels only; next to it the share a uniform map would give (the lesion's
  share of the brain), so a number can be read against chance;
- pointing game: does the map's maximum (inside the brain) lie in the lesion; hit rate
  with a Wilson interval;
- MPRT (model-parameter randomisation test, Adebayo et al. 2018): cascading
  randomisation from the output layer down; the Spearman similarity between the map of
  the trained model and that of the fully randomised model should be near 0 (a map that
  survives randomisation explains the image, not the model).

Settings. ``--full`` is the paper's: 192 px, the whole development cohort, up to 100
epochs with early stopping (patience 10), all five architectures -- for a GPU. The
default is a fixed smaller setting for a 2-core CPU: 96 px, 150 patients, 5 epochs, the
four architectures of the paper's Table 2 (Dense, Flat, GAP, Shallow). The Herzog
baseline pools six times and only takes multiples of 64 px, so it joins whenever the size
allows (``--full``, ``--size 128``; about 5x the GAP model's time per step on a CPU).
``--quick`` (tests): the 12-patient synthetic cohort, 64 px, 1 epoch.

Each model is trained by :func:`analyses.train_models.main` (split, class weights,
augmentation, checkpoints) into its own folder under the cache, keyed by the settings: a
killed run continues from its last epoch, finished models are reused.

    python -m analyses.model_debugging                   # CPU setting, about an hour
    python -m analyses.model_debugging --full            # GPU
    python -m analyses.model_debugging --cohort DIR      # a researcher's own cohort
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from analyses._experiment import (  # noqa: E402
    ExperimentError,
    experiment_parser,
    resolve_cohort,
    stage,
    store_brain,
    write_experiment,
)
from hypo._util import file_hash, rng_for, stable_hash, write_json_atomic  # noqa: E402
from hypo.paths import cache_dir, default_cohort_dir  # noqa: E402

NAME = "model_debugging"
#: The paper's names of the architectures (Table 2 and section 4.1.4).
PAPER_NAMES = {
    "herzog": "Baseline (Herzog)",
    "dense": "Dense-Model",
    "flat": "Flat-Model",
    "gap": "GAP-Model",
    "shallow": "Shallow-Model",
}
#: The paper's verdict on each model's Grad-CAM (judged by eye, section 4.1.4).
PAPER_VERDICT = {
    "herzog": "qualitatively poor",
    "dense": "qualitatively poor",
    "flat": "qualitatively poor",
    "gap": "qualitatively good",
    "shallow": "qualitatively very good",
}


@dataclass
class TrainingSetting:
    """How the experiment's models are trained (defaults: the 2-core CPU setting).

    Parameters
    ----------
    size : int
        Image height and width in pixels (paper: 192).
    patients : int or None
        Patients drawn from the cohort (stratified by group, seeded); None = all.
    epochs : int
        Maximum epochs (paper code: 100).
    patience : int
        Early-stopping patience in epochs (paper code: 10).
    batch_size : int
        Slices per batch (paper: 64).
    seed : int
        Seed of weights, dropout, shuffles and augmentation (the same for every model).
    split_seed : int
        Seed of the patient-level train/validation/test split (70/15/15).
    patient_seed : int
        Seed of the patient subset.
    precision : str
        Keras mixed-precision policy of training (``float32``; ``mixed_bfloat16`` trains
        ~1.6x faster on a CPU with AVX512-BF16). CAMs and evaluation stay float32.
    """

    size: int = 96
    patients: int | None = 150
    epochs: int = 5
    patience: int = 10
    batch_size: int = 64
    seed: int = 0
    split_seed: int = 0
    patient_seed: int = 0
    precision: str = "float32"

    def identity(self) -> dict:
        """The fields that make a trained model; float32 precision is left out so that
        models trained before the field existed keep their keys."""
        d = asdict(self)
        if d["precision"] == "float32":
            del d["precision"]
        return d

    def key(self, cohort_hash: str, architecture: str, seed: int | None = None) -> dict:
        """Everything a trained model depends on (its cache folder's name hashes this)."""
        d = self.identity()
        d.update(cohort_hash=cohort_hash, architecture=architecture)
        if seed is not None:
            d["seed"] = int(seed)
        return d


#: The 2-core CPU setting (default), the paper's setting (GPU) and the test setting.
CPU = TrainingSetting()
FULL = TrainingSetting(size=192, patients=None, epochs=100, patience=10)
QUICK = TrainingSetting(size=64, patients=None, epochs=1, patience=10)


@dataclass
class Member:
    """One trained model of an experiment."""

    label: str
    architecture: str
    seed: int
    folder: Path
    model: object
    card: dict
    reused: bool = False
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- shared helpers


def training_cohort(args, progress: bool = True):
    """The cohort models are trained on: ``--cohort``, the ``--quick`` cohort, or the
    synthetic development cohort (generated when missing)."""
    if args.cohort is not None or args.quick:
        return resolve_cohort(args.cohort, args.quick, args.quick_patients, progress)
    import hypo.cohort as hc
    from hypo.cohort.synthetic import generate_cohort
    from hypo.paths import DEV_COHORT

    root = default_cohort_dir("dev")
    generate_cohort(root, n_patients=DEV_COHORT["patients"], seed=DEV_COHORT["seed"],
                    progress=progress)  # fmt: skip
    return hc.load(root)


def select_patients(cohort, n: int | None, seed: int = 0) -> list[str] | None:
    """``n`` patients of ``cohort``, the same share of each ``group`` as the cohort
    (seeded); None when ``n`` is None or not smaller than the cohort."""
    pids = np.asarray(cohort.participant_ids())
    if n is None or n >= len(pids):
        return None
    if n < 10:
        raise ExperimentError(f"--patients {n}: at least 10 are needed for a 70/15/15 split")
    groups = (
        cohort.participants["group"].astype(str).reindex(pids).fillna("n/a").to_numpy()
        if "group" in cohort.participants.columns
        else np.full(len(pids), "all")
    )
    rng = rng_for(seed, "patient-subset")
    chosen = []
    uniq, counts = np.unique(groups, return_counts=True)
    quota = np.floor(counts * n / len(pids)).astype(int)
    # Largest remainders get the patients the floors left over.
    rest = n - quota.sum()
    order = np.argsort(-(counts * n / len(pids) - quota), kind="stable")
    quota[order[:rest]] += 1
    for g, q in zip(uniq, quota):
        members = pids[groups == g]
        chosen.extend(rng.choice(members, size=int(q), replace=False).tolist())
    return sorted(chosen)


def training_store(cohort, setting: TrainingSetting, progress: bool = True):
    """Slice store of the setting's patients at the setting's size (cached)."""
    from hypo.preprocess import PreprocessConfig, build_slice_store

    pids = select_patients(cohort, setting.patients, setting.patient_seed)
    return build_slice_store(cohort, PreprocessConfig(size=setting.size), progress=progress,
                             participants=pids)  # fmt: skip


#: Experiments share trained models: ``reproducibility``'s first seed is
#: ``model_debugging``'s GAP model when store, setting and seed agree.
SHARED_MODELS = "trained_models"


def models_root(store, setting: TrainingSetting) -> Path:
    """Cache folder of the experiments' trained models for this store and setting; one
    sub-folder per ``<architecture>-seed<seed>`` (see :func:`member_folder`)."""
    key = stable_hash({"store": store.path.name, **setting.identity()}, 12)
    return cache_dir() / "analyses" / SHARED_MODELS / f"{store.cohort_id}-{key}"


def member_folder(root: Path, architecture: str, seed: int) -> Path:
    return root / f"{architecture}-seed{seed}"


def train_member(
    store,
    folder: Path,
    architecture: str,
    setting: TrainingSetting,
    seed: int | None = None,
    n_boot: int = 200,
    quiet: bool = False,
    label: str | None = None,
) -> Member:
    """Train ``architecture`` on ``store`` with :func:`analyses.train_models.main`, or reuse
    the finished model in ``folder``.

    A model counts as finished when ``folder/done.json`` holds this setting's key; an
    unfinished folder is resumed from its last checkpoint.
    """
    from analyses import train_models
    from hypo.nets.cards import read_card
    from hypo.nets.io import load_model

    seed = setting.seed if seed is None else int(seed)
    key = setting.key(store.cohort_hash, architecture, seed)
    folder = Path(folder)
    label = label or architecture
    done = folder / "done.json"
    if done.is_file() and (folder / "model.keras").is_file():
        import json

        if json.loads(done.read_text()).get("key") == key:
            return Member(label, architecture, seed, folder, load_model(folder),
                          read_card(folder), reused=True)  # fmt: skip
    argv = [
        "--model", architecture, "--size", str(setting.size), "--epochs", str(setting.epochs),
        "--patience", str(setting.patience), "--batch-size", str(setting.batch_size),
        "--seed", str(seed), "--split-seed", str(setting.split_seed), "--n-boot", str(n_boot),
        "--precision", setting.precision, "--out", str(folder), "--resume",
    ]  # fmt: skip
    if quiet:
        argv.append("--quiet")
    t0 = time.perf_counter()
    # train_models reports on stdout; an experiment keeps stdout free and logs to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        train_models.main(argv, store=store)
    write_json_atomic(done, {"key": key, "train_seconds": round(time.perf_counter() - t0, 1)})
    return Member(label, architecture, seed, folder, load_model(folder), read_card(folder))


def test_rows(store, card: dict) -> tuple[np.ndarray, np.ndarray]:
    """Store rows of the card's test patients and their stroke labels (reader's label)."""
    from hypo.nets.labels import task_labels

    sl = task_labels("stroke", store.table)
    labels = np.full(len(store.table), -1, dtype=np.int64)
    labels[sl.index] = sl.y
    pid = store.table["participant_id"].astype(str).to_numpy()
    rows = np.flatnonzero(np.isin(pid, list(card["test_patients"])) & (labels >= 0))
    if len(rows) == 0:
        raise ExperimentError("the models' test patients have no labelled slice in the store")
    return rows, labels[rows]


def store_images(store, rows) -> np.ndarray:
    """Model-ready ``(n, size, size, 1)`` float32 images of store ``rows``."""
    return np.asarray(store.images[np.asarray(rows)], dtype=np.float32)[..., None]


def truth_brain(store, rows) -> np.ndarray | None:
    """Ground-truth brain masks of ``rows`` on a synthetic cohort, else None."""
    return store_brain(store, rows, derive=False)[0]


def native_slice(cohort, pid: str, k: int) -> np.ndarray:
    """Native axial slice ``k`` of a patient (0-255, radiological view)."""
    from hypo.cohort.orientation import axial_slice

    return axial_slice(cohort.dwi(pid).data, int(k))


def describe_setting(cohort, store, setting: TrainingSetting, card: dict) -> str:
    """One paragraph naming cohort, patients, split sizes, image size and epochs."""
    synthetic = " (synthetic: generated by hypo, not patient data)" if cohort.is_synthetic else ""
    n_pat = store.table["participant_id"].nunique()
    return (
        f"Cohort `{cohort.cohort_id}`{synthetic}; {n_pat} patients "
        f"({'all' if setting.patients is None else 'a seeded, group-stratified subset'}), "
        f"{len(store.table)} slices at {setting.size} px. Patient-level split (seed "
        f"{setting.split_seed}): {len(card['train_patients'])} training, "
        f"{len(card['val_patients'])} validation, {len(card['test_patients'])} test patients. "
        f"Up to {setting.epochs} epochs (early stopping, patience {setting.patience}), "
        f"batch {setting.batch_size}, training seed {setting.seed}, {setting.precision}."
    )


def add_setting_options(p, default: TrainingSetting = CPU) -> None:
    """``--full``, ``--size``, ``--patients``, ``--epochs``, ``--patience``, ``--batch-size``,
    ``--split-seed``, ``--n-boot`` (shared by the training experiments)."""
    p.add_argument("--full", action="store_true",
                   help="the paper's setting: 192 px, all patients, 100 epochs (GPU)")  # fmt: skip
    p.add_argument("--size", type=int, default=None, help=f"pixels (default {default.size})")
    p.add_argument("--patients", type=int, default=None,
                   help=f"patients of the cohort (default {default.patients}; 0 = all)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=None, help=f"default {default.epochs}")
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates (default 2000)")
    p.add_argument("--precision", default=None, choices=["float32", "mixed_bfloat16"],
                   help="training precision (default float32)")  # fmt: skip


def setting_from_args(args, default: TrainingSetting = CPU) -> TrainingSetting:
    """The :class:`TrainingSetting` of ``--quick``/``--full``/default plus explicit options."""
    if args.quick and args.full:
        raise ExperimentError("--quick and --full exclude each other")
    base = QUICK if args.quick else FULL if args.full else default
    s = TrainingSetting(**asdict(base))
    s.seed, s.split_seed = int(args.seed), int(args.split_seed)
    for opt in ("size", "epochs", "patience", "batch_size"):
        v = getattr(args, opt)
        if v is not None:
            setattr(s, opt, int(v))
    if args.patients is not None:
        s.patients = None if args.patients == 0 else int(args.patients)
    if getattr(args, "precision", None):
        s.precision = args.precision
    return s


def n_boot_of(args) -> int:
    return int(args.n_boot) if args.n_boot is not None else (50 if args.quick else 2000)


# --------------------------------------------------------------------------- the experiment


def localisation(member: Member, x, lesion, brain, batch_size: int = 32) -> pd.DataFrame:
    """Grad-CAM of class "stroke" against the lesion masks, one row per slice."""
    from hypo.cam import compute
    from hypo.cam.metrics import localisation_table

    res = compute(member.model, x, layer=member.card["cam_layer"], methods=("gradcam",),
                  classes=[1], resize=True, batch_size=batch_size)  # fmt: skip
    maps = res["gradcam"][:, 0]
    t = localisation_table(maps, lesion, brain)
    region = brain if brain is not None else np.ones_like(lesion)
    in_region = region.reshape(len(region), -1).sum(1)
    t["chance_relevance_mass"] = t["mask_pixels"] / np.maximum(in_region, 1)
    t["p_stroke"] = res.probabilities[:, 1]
    t["zero_map"] = maps.reshape(len(maps), -1).max(1) <= 0
    return t.drop(columns=["map_index"])


def mprt(member: Member, x, seed: int = 0) -> pd.DataFrame:
    """Cascading randomisation of ``member`` on images ``x`` (Grad-CAM, class stroke)."""
    from hypo.cam.sanity import cascading_randomisation

    df = cascading_randomisation(member.model, x, layer=member.card["cam_layer"],
                                 methods=("gradcam",), classes=[1], seed=seed)  # fmt: skip
    df["n_steps"] = int(df["step"].max())
    return df


def explainability_summary(loc: pd.DataFrame, mp: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture: relevance mass, pointing game (Wilson CI), MPRT."""
    from hypo.intervals import wilson_ci

    rows = []
    for arch, g in loc.groupby("architecture", sort=False):
        pg = g["pointing_game"].dropna()
        lo, hi = wilson_ci(int(pg.sum()), len(pg))
        m = mp[mp["architecture"] == arch]
        last = m[m["step"] == m["step"].max()]["spearman_rho"]
        first = m[m["step"] == 1]["spearman_rho"]
        rows.append(
            {
                "architecture": arch,
                "n_lesion_slices": len(g),
                "zero_maps": int(g["zero_map"].sum()),
                "relevance_mass": g["relevance_mass"].mean(),
                "chance_relevance_mass": g["chance_relevance_mass"].mean(),
                "relevance_rank": g["relevance_rank"].mean(),
                "mask_auc": g["auc"].mean(),
                "pointing_game": pg.mean() if len(pg) else np.nan,
                "pointing_game_low": lo,
                "pointing_game_high": hi,
                "pointing_game_n": len(pg),
                "mprt_rho_logits_randomised": first.median(),
                "mprt_rho_fully_randomised": last.median(),
                "mprt_n_slices": int(m["image"].nunique()) if len(m) else 0,
                "paper_verdict_by_eye": PAPER_VERDICT.get(arch, ""),
            }
        )
    return pd.DataFrame(rows)


def _mprt_figure(mp: pd.DataFrame, path: Path) -> Path:
    import plotnine as p9

    from hypo.report.figures import save_figure

    d = mp.groupby(["architecture", "step"], sort=False)["spearman_rho"].median().reset_index()
    d["share_randomised"] = d["step"] / d.groupby("architecture")["step"].transform("max")
    fig = (
        p9.ggplot(d, p9.aes("share_randomised", "spearman_rho", colour="architecture"))
        + p9.geom_hline(yintercept=0, linetype="dashed", colour="grey")
        + p9.geom_line()
        + p9.geom_point(size=1)
        + p9.labs(
            x="share of weighted layers re-drawn (from the output down)",
            y="median Spearman rho\n(trained vs randomised Grad-CAM)",
            title="MPRT: cascading randomisation",
        )  # fmt: skip
        + p9.theme_bw()
    )
    return save_figure(fig, path, width=6.5, height=3.6)


def _panels(cohort, store, members, rows, out: Path) -> Path:
    from hypo.cam import compute
    from hypo.report.cam_panels import write_cam_panels

    t = store.table
    x = store_images(store, rows)
    examples = []
    for m in members:
        res = compute(m.model, x, layer=m.card["cam_layer"], methods=("gradcam", "gradcampp"))
        classes = m.card["classes"]
        for i, r in enumerate(rows):
            pid, k = str(t["participant_id"].iloc[r]), int(t["slice"].iloc[r])
            examples.append(
                {
                    "participant_id": pid,
                    "image_native": native_slice(cohort, pid, k),
                    "image_preprocessed": x[i, ..., 0],
                    "maps": {
                        (meth, c): res[meth][i, j]
                        for meth in ("gradcam", "gradcampp")
                        for j, c in enumerate(classes)
                    },  # fmt: skip
                    "probabilities": {
                        c: float(res.probabilities[i, j]) for j, c in enumerate(classes)
                    },  # fmt: skip
                    "slice_index": k,
                    "mrs_3months": float(t["mrs_3months"].iloc[r])
                    if "mrs_3months" in t.columns
                    else None,
                    "lesion_mask": np.asarray(store.masks["lesion"][r]) > 0,
                    "model": PAPER_NAMES.get(m.architecture, m.architecture),
                }
            )
    return write_cam_panels(out, examples, classes=[members[0].card["classes"][1]],
                            methods=("gradcam", "gradcampp"), scale="per_image")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from hypo.nets.evaluation import evaluate_stroke, table2

    p = experiment_parser(NAME, __doc__, model=None)
    add_setting_options(p)
    p.add_argument("--architectures", nargs="+", default=None, choices=list(PAPER_NAMES),
                   help="default: all five that take the size (Herzog: multiples of 64 px)")  # fmt: skip
    p.add_argument("--cam-slices", type=int, default=400,
                   help="test lesion slices whose Grad-CAM is scored (seeded draw; 0 = all)")  # fmt: skip
    p.add_argument("--mprt-slices", type=int, default=8,
                   help="test lesion slices of the cascading randomisation")  # fmt: skip
    args = p.parse_args(argv)
    started = time.perf_counter()
    q = args.quiet
    try:
        setting = setting_from_args(args)
        cohort = training_cohort(args, progress=not q)
        if not cohort.has_lesion_masks:
            raise ExperimentError(
                f"cohort {cohort.cohort_id}: no lesion masks; the explainability column is "
                "measured against lesion masks (derivatives/lesion_masks/...)"
            )
        store = training_store(cohort, setting, progress=not q)
    except (ExperimentError, ValueError, FileNotFoundError) as e:
        print(f"[{NAME}] error: {e}", file=sys.stderr)
        return 2
    from hypo.nets.architectures import SIZE_DIVISOR

    fits = [a for a in PAPER_NAMES if setting.size % SIZE_DIVISOR[a] == 0]
    archs = list(args.architectures or fits)
    wrong = [a for a in archs if a not in fits]
    if wrong:
        print(f"[{NAME}] error: {wrong} cannot take {setting.size} px images (Herzog needs a "
              "multiple of 64, the others of 32 or less)", file=sys.stderr)  # fmt: skip
        return 2
    root = models_root(store, setting)
    stage(NAME, f"{len(store.table)} slices at {setting.size} px; models under {root}", q)

    members = []
    for arch in archs:
        stage(NAME, f"training {arch} ({setting.epochs} epochs max)", q)
        m = train_member(store, member_folder(root, arch, setting.seed), arch, setting,
                         n_boot=n_boot_of(args), quiet=q)  # fmt: skip
        stage(NAME, f"{arch}: {'reused' if m.reused else 'trained'} -> {m.folder}", q)
        members.append(m)
    tests = {tuple(m.card["test_patients"]) for m in members}
    if len(tests) != 1:
        raise AssertionError("the architectures were tested on different patients")

    rows, y = test_rows(store, members[0].card)
    pid = store.table["participant_id"].astype(str).to_numpy()[rows]
    x = store_images(store, rows)
    lesion_all = np.asarray(store.masks["lesion"][rows]) > 0
    les = np.flatnonzero(lesion_all.reshape(len(rows), -1).any(1))
    if args.cam_slices and len(les) > args.cam_slices:
        les = np.sort(rng_for(setting.seed, "cam-slices").choice(les, args.cam_slices, False))
    mprt_idx = les[np.linspace(0, len(les) - 1, min(args.mprt_slices, len(les))).astype(int)]
    brain = truth_brain(store, rows[les])

    evals, perf, loc_frames, mprt_frames = {}, [], [], []
    for m in members:
        stage(NAME, f"evaluating {m.architecture} on {len(rows)} test slices", q)
        proba = m.model.predict(x, batch_size=64, verbose=0)
        ev = evaluate_stroke(y, proba, pid, n_boot=n_boot_of(args), seed=setting.seed)
        evals[PAPER_NAMES[m.architecture]] = ev
        t = ev.image.copy()
        t.insert(0, "architecture", m.architecture)
        t.insert(1, "n_parameters", int(m.model.count_params()))
        perf.append(t)
        if len(les):
            lt = localisation(m, x[les], lesion_all[les], brain)
            lt.insert(0, "architecture", m.architecture)
            lt.insert(1, "participant_id", pid[les])
            lt.insert(2, "slice", store.table["slice"].to_numpy()[rows[les]])
            loc_frames.append(lt)
            stage(NAME, f"MPRT of {m.architecture} on {len(mprt_idx)} slices", q)
            d = mprt(m, x[mprt_idx], seed=setting.seed)
            d.insert(0, "architecture", m.architecture)
            mprt_frames.append(d)

    t2 = table2(evals)
    t2.insert(1, "Parameters", [int(m.model.count_params()) for m in members])
    perf_df = pd.concat(perf, ignore_index=True)
    loc = pd.concat(loc_frames, ignore_index=True) if loc_frames else pd.DataFrame()
    mp = pd.concat(mprt_frames, ignore_index=True) if mprt_frames else pd.DataFrame()
    warnings = []
    left_out = [a for a in PAPER_NAMES if a not in archs]
    if left_out:
        warnings.append(
            f"Not trained in this run: {', '.join(PAPER_NAMES[a] for a in left_out)}"
            + (" (the Herzog baseline takes only multiples of 64 px)" if "herzog" in left_out
               and "herzog" not in fits else "")
        )  # fmt: skip
    if len(les) == 0:
        warnings.append("The test patients have no lesion slice: no explainability measured.")
        expl = pd.DataFrame()
    else:
        expl = explainability_summary(loc, mp)
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures = []
    if len(mp):
        figures.append(("figures/mprt.png", "MPRT: median Spearman similarity of the Grad-CAM "
                        "(class stroke) of the trained model to that of the model with the top "
                        "share of its weighted layers re-drawn. Near 0 = the map depends on the "
                        "weights (passes); near 1 = it does not."))  # fmt: skip
        _mprt_figure(mp, out / figures[-1][0])
    if len(les):
        ex_rows = rows[les[np.argsort(-lesion_all[les].reshape(len(les), -1).sum(1))[:2]]]
        figures.append(("figures/cam_panels.png", "Grad-CAM and Grad-CAM++ of class stroke "
                        "(each map min-max scaled on its own) of the two test slices with the "
                        "largest lesions, one row per architecture; lesion outlined."))  # fmt: skip
        _panels(cohort, store, members, ex_rows, out / figures[-1][0])

    card = members[0].card
    layers = ", ".join(f"{m.architecture}: `{m.card['cam_layer']}`" for m in members)
    setting_txt = describe_setting(cohort, store, setting, card)
    mode = "--quick (test setting)" if args.quick else "--full (paper setting)" if args.full \
        else "CPU setting (smaller than the paper's 192 px, all patients, 100 epochs)"  # fmt: skip
    expl_show = expl.copy()
    if len(expl_show):
        expl_show["pointing_game"] = [
            f"{r.pointing_game:.3f} [{r.pointing_game_low:.3f} {r.pointing_game_high:.3f}] "
            f"(n={r.pointing_game_n})" for r in expl_show.itertuples()
        ]  # fmt: skip
        expl_show = expl_show.drop(columns=["pointing_game_low", "pointing_game_high",
                                            "pointing_game_n"])  # fmt: skip
    sections = [
        {"heading": "Setting", "paragraphs": [
            f"Mode: {mode}. " + setting_txt,
            "Every architecture: same seed, same split, same slices (`hypo.nets.training` via "
            "`analyses.train_models`). Metrics on the test patients' slices; label = reader's "
            "slice label (`lesion_visible`). Grad-CAM of class stroke from the pre-softmax "
            f"score at the ReLU after the last convolution ({layers}), bilinear to the input.",
        ]},
        {"heading": "Table 2: performance (image level, Wilson 95 % intervals)", "tables": [
            (t2, "Paper's Table 2 columns. AUC = ROC AUC of the probabilities; 'AUC (hard)' = "
                 "(sensitivity + specificity) / 2, what the paper's AUC column equals.")]},
        {"heading": "Explainability measured against the lesion masks", "paragraphs": [
            "relevance_mass: share of the map inside the lesion (brain pixels only); "
            "chance_relevance_mass: what a uniform map gets (the lesion's share of the brain). "
            "pointing_game: hit rate of the map's maximum, Wilson 95 % interval. "
            "mprt_rho_*: median Spearman of the trained model's map to the map after "
            "re-drawing the logits layer only / every weighted layer (want: near 0 after full "
            "randomisation). zero_maps: slices whose stroke map is all zero (ReLU). The last "
            "column is the paper's verdict by eye, for comparison."],
         "tables": [(expl_show, "One row per architecture.")] if len(expl_show) else []},
        {"heading": "Figures", "figures": figures},
    ]  # fmt: skip
    provenance = {
        "setting": asdict(setting),
        "models": {
            m.architecture: {"folder": str(m.folder), "sha256": file_hash(m.folder / "model.keras"),
                             "reused": m.reused, "cam_layer": m.card["cam_layer"]}
            for m in members
        },
        "cohort": {"id": cohort.cohort_id, "content_hash": store.cohort_hash,
                   "slice_store": store.path.name, "synthetic": bool(cohort.is_synthetic)},
        "test_patients": list(card["test_patients"]),
    }  # fmt: skip
    tables = {"table2": t2, NAME: perf_df, "explainability": expl, "localisation": loc,
              "mprt": mp}  # fmt: skip
    write_experiment(out, NAME, tables=tables, sections=sections, config=vars(args),
                     intro=[__doc__.split("\n\n")[0]], warnings=warnings,
                     extra_provenance=provenance, started=started)  # fmt: skip
    stage(NAME, f"report -> {out / 'report.md'}", q)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
