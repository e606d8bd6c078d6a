"""3D Grad-CAM on whole volumes (paper appendix "3D XAI", Figure 18).

The paper's appendix showed one stroke patient's 30 axial slices above the 3D model's
Grad-CAM of class "Stroke" and judged by eye that "between axial slice 13 and 23 the
detection seems to be precise". hypo trains the 3D GAP CNN (``gap3d``: in-plane pooling
first, so its last maps keep several slices) on whole DWI volumes resampled to a fixed
grid, and on every test patient with a lesion measures, in 3D and against the lesion mask:

- relevance mass (share of the map inside the lesion, brain voxels only) and pointing
  game of the 3D Grad-CAM (trilinear to the grid);
- the same for the 2D model's per-slice Grad-CAMs stacked into a volume (each slice's
  map taken back through its crop/resize to the native slice, then through the same
  resampling as the volume), so both maps are scored on the same voxels and masks;
- the voxelwise Spearman correlation of the two maps inside the brain.

A per-slice montage of one test patient (image, 3D map, stacked 2D maps) stands in for
Figure 18. The 3D model is trained on the development cohort; when the 2D model was
trained on the same cohort, its card's test patients are the test patients here and its
training/validation patients the only ones the 3D model trains on, so neither model has
seen a test volume.

Settings. Default (2-core CPU): grid 64 x 64 x 32 voxels, 200 patients for training and
validation, 10 epochs. ``--full``: 128 x 128 x 32 (the original group's 3D input was
128 x 128 x 28), all patients, up to 100 epochs (GPU). ``--quick``: 32 x 32 x 8, 1 epoch.

Command line: ``python -m analyses.cam3d``; in a notebook
``cam3d.run(RunSettings(out=..., model_dir=...), Volume3DSetting())``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import keras
import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from hypo._util import atomic_path, file_hash, stable_hash, write_json_atomic  # noqa: E402
from hypo.cam import compute  # noqa: E402
from hypo.cam.metrics import localisation_table  # noqa: E402
from hypo.cohort.orientation import axial_slices  # noqa: E402
from hypo.nets.architectures import build_model, check_input_shape  # noqa: E402
from hypo.nets.cards import read_card  # noqa: E402
from hypo.nets.evaluation import binary_table  # noqa: E402
from hypo.nets.io import load_model, make_card, save_model  # noqa: E402
from hypo.nets.splits import patient_split  # noqa: E402
from hypo.nets.training import class_weights_for  # noqa: E402
from hypo.paths import cache_dir  # noqa: E402
from hypo.preprocess import PreprocessConfig, build_slice_store, normalize  # noqa: E402
from hypo.study.experiments.frame import (  # noqa: E402
    ExperimentError,
    RunSettings,
    check_model_dir,
    stage,
    write_experiment,
)
from hypo.study.experiments.training import (  # noqa: E402
    select_patients,
    spearman_in_region,
    training_cohort,
)

NAME = "cam3d"
#: Grey value (0-255) above which a voxel counts as head, for the crop box and, without a
#: ground-truth brain mask, as the region the maps are scored in.
HEAD_THRESHOLD = 10.0


@dataclass
class Volume3DSetting:
    """How the 3D model is trained (defaults: the 2-core CPU setting).

    Parameters
    ----------
    grid : tuple of int
        ``(rows, cols, slices)`` of the resampled volumes (rows, cols: multiples of 16;
        slices: a multiple of 4).
    patients : int or None
        Patients drawn for training and validation (stratified by group); None = all.
    epochs, patience, batch_size, seed, learning_rate : training (Adam, early stopping on
        the validation loss).
    """

    grid: tuple = (64, 64, 32)
    patients: int | None = 200
    epochs: int = 10
    patience: int = 10
    batch_size: int = 8
    seed: int = 0
    learning_rate: float = 1e-3


CPU = Volume3DSetting()
FULL = Volume3DSetting(grid=(128, 128, 32), patients=None, epochs=100)
QUICK = Volume3DSetting(grid=(32, 32, 8), patients=None, epochs=1, batch_size=4)


# --------------------------------------------------------------------------- volumes


def head_box(data: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of the head (voxels above :data:`HEAD_THRESHOLD`) of a
    ``(rows, cols, slices)`` volume; the whole volume if nothing is above it."""
    fg = data > HEAD_THRESHOLD
    if not fg.any():
        return tuple(slice(0, n) for n in data.shape)
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(fg.any(axis=other))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def to_grid(a: np.ndarray, box, grid, order: int) -> np.ndarray:
    """Crop ``a`` to ``box`` and resample it to ``grid`` (order 1: trilinear, 0: nearest).

    Images, masks and stacked maps of one patient go through this with the same ``box``,
    so they stay voxel-aligned.
    """
    crop = np.asarray(a, dtype=np.float32)[box]
    factors = np.asarray(grid, float) / np.asarray(crop.shape, float)
    out = ndimage.zoom(crop, factors, order=order, grid_mode=True, mode="grid-constant")
    if out.shape != tuple(grid):  # pragma: no cover - zoom rounds the shape to the grid
        raise AssertionError(f"resampled to {out.shape}, expected {tuple(grid)}")
    return out


def radiological(volume: np.ndarray) -> np.ndarray:
    """Canonical ``(x, y, z)`` -> ``(rows, cols, slices)``, each slice in the radiological
    view (column 0 = the patient's right), like the 2D slices."""
    return np.transpose(axial_slices(volume), (1, 2, 0))


def patient_volume(cohort, pid: str, grid) -> dict:
    """A patient's DWI, lesion and brain masks on ``grid`` plus the crop box.

    ``image`` is z-scored over the whole grid (as the 2D slices are per image); ``brain``
    is the ground-truth brain on a synthetic cohort, else the head voxels.
    """
    raw = radiological(cohort.dwi(pid).data)
    box = head_box(raw)
    img = to_grid(raw, box, grid, order=1)
    lesion = cohort.lesion_mask(pid)
    brain = cohort.truth_mask(pid, "brain") if getattr(cohort, "is_synthetic", False) else None
    return {
        "image": normalize(img, "zscore"),
        "lesion": to_grid(radiological(lesion), box, grid, 0) > 0.5
        if lesion is not None
        else np.zeros(grid, bool),
        "brain": to_grid(radiological(brain > 0), box, grid, 0) > 0.5
        if brain is not None
        else img > HEAD_THRESHOLD,
        "box": np.array([[s.start, s.stop] for s in box]),
        "native_shape": np.array(raw.shape),
    }


def volumes(cohort, pids, grid, progress: bool = True) -> dict[str, np.ndarray]:
    """Stacked :func:`patient_volume` of ``pids``, cached per patient under the cache dir."""
    key = stable_hash({"grid": list(grid), "threshold": HEAD_THRESHOLD}, 10)
    folder = cache_dir() / "analyses" / NAME / "volumes" / f"{cohort.cohort_id}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, pid in enumerate(pids):
        f = folder / f"{pid}.npz"
        if not f.is_file():
            v = patient_volume(cohort, pid, grid)
            with atomic_path(f) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **v)
        with np.load(f) as z:
            parts.append({k: z[k] for k in z.files})
        if progress and (i + 1) % 50 == 0:
            stage(NAME, f"volumes {i + 1}/{len(pids)}")
    return {k: np.stack([p[k] for p in parts]) for k in parts[0]}


# --------------------------------------------------------------------------- the 3D model


def patient_labels(cohort) -> pd.Series:
    """1 if any of a patient's slices shows a lesion (reader's label), else 0."""
    sl = cohort.slice_labels()
    vis = sl["lesion_visible"].fillna(False).astype(bool)
    return vis.groupby(sl["participant_id"].astype(str)).any().astype(int)


def split_for(cohort, card: dict, setting: Volume3DSetting, split_seed: int = 0):
    """Train / validation / test patients of the 3D model.

    The 2D model's split when it was trained on this cohort (so neither model saw a test
    patient), else a stratified patient split; training and validation are then thinned
    to ``setting.patients`` (test patients are all kept).
    """
    all_ids = set(cohort.participant_ids())
    cid = (card.get("cohort") or {}).get("id")
    if cid == cohort.cohort_id:
        tr, va, te = (
            sorted(set(card[k]) & all_ids)
            for k in ("train_patients", "val_patients", "test_patients")
        )
        source = "the 2D model's split"
    else:
        tab = cohort.participants.reset_index()
        tab["participant_id"] = tab["participant_id"].astype(str)
        sp = patient_split(tab, seed=split_seed)
        tr, va, te = list(sp.train), list(sp.val), list(sp.test)
        source = f"a stratified patient split (seed {split_seed})"
    keep = select_patients(cohort, setting.patients, setting.seed)
    if keep is not None:
        # Keep the share of the subset in the training and validation sets.
        keep = set(keep)
        tr, va = [p for p in tr if p in keep], [p for p in va if p in keep]
    if not tr or not va or not te:
        raise ExperimentError(
            f"3D split: {len(tr)} training, {len(va)} validation, {len(te)} test patients; "
            "need at least one of each (more patients, or --patients 0)"
        )
    return tr, va, te, source


def train_3d(x_tr, y_tr, x_va, y_va, folder: Path, setting: Volume3DSetting, quiet: bool):
    """Train ``gap3d`` (Adam, balanced class weights, early stopping, per-epoch backup so a
    killed run resumes) and return the model with the best validation loss."""
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(setting.seed)
    model = build_model("gap3d", input_shape=(*setting.grid, 1), n_classes=2, seed=setting.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(setting.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    folder.mkdir(parents=True, exist_ok=True)
    callbacks = [
        # hypo.nets.training's loop reads 2D slices only; Keras' own backup gives a
        # volume model the same resume-after-kill behaviour.
        keras.callbacks.BackupAndRestore(str(folder / "backup")),
        keras.callbacks.EarlyStopping(patience=setting.patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(folder / "log.csv"), append=True),
    ]
    oh = keras.utils.to_categorical
    model.fit(
        x_tr[..., None],
        oh(y_tr, 2),
        validation_data=(x_va[..., None], oh(y_va, 2)),
        epochs=setting.epochs,
        batch_size=setting.batch_size,
        shuffle=True,
        class_weight=class_weights_for(y_tr, 2),
        callbacks=callbacks,
        verbose=0 if quiet else 2,
    )
    return model


# --------------------------------------------------------------------------- 2D maps stacked


def stacked_2d_maps(model2d, card2d: dict, store, cohort, pids, vols, grid) -> np.ndarray:
    """The 2D model's Grad-CAM of class "stroke", per slice, back on the 3D grid.

    Each slice's map goes through the inverse of its crop/resize to the native slice;
    slices the store dropped (black) get 0; then the volume's own crop and resampling.
    """
    stroke = list(card2d["classes"]).index("stroke") if "stroke" in card2d["classes"] else 1
    out = np.zeros((len(pids), *grid), np.float32)
    for i, pid in enumerate(pids):
        rows = store.patient_rows(pid)
        r, c, s = (int(v) for v in vols["native_shape"][i])
        native = np.zeros((r, c, s), np.float32)
        if len(rows):
            x = np.asarray(store.images[rows], np.float32)[..., None]
            res = compute(
                model2d,
                x,
                layer=card2d.get("cam_layer"),
                methods=("gradcam",),
                classes=[stroke],
                resize=True,
            )
            for j, row in enumerate(rows):
                k = int(store.table["slice"].iloc[row])
                native[:, :, k] = store.transform(row).inverse(res["gradcam"][j, 0])
        box = tuple(slice(int(a), int(b)) for a, b in vols["box"][i])
        out[i] = to_grid(native, box, grid, order=1)
    return out


def _montage(image, cam3, cam2, lesion, pid: str, path: Path) -> Path:
    d = image.shape[2]
    cols = min(8, d)
    blocks = (("DWI", None), ("3D Grad-CAM", cam3), ("2D Grad-CAM, stacked", cam2))
    nrow = int(np.ceil(d / cols))
    fig, axes = plt.subplots(nrow * 3, cols, figsize=(cols * 1.1, nrow * 3 * 1.15), squeeze=False)
    for b, (name, cam) in enumerate(blocks):
        hi = float(cam.max()) if cam is not None and cam.max() > 0 else 1.0
        for k in range(nrow * cols):
            ax = axes[b * nrow + k // cols, k % cols]
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= d:
                ax.axis("off")
                continue
            ax.imshow(image[:, :, k], cmap="gray", interpolation="nearest")
            if cam is not None:
                ax.imshow(cam[:, :, k], cmap="jet", vmin=0, vmax=hi, alpha=0.45)
            if lesion[:, :, k].any():
                ax.contour(
                    lesion[:, :, k].astype(float), levels=[0.5], colors="white", linewidths=0.4
                )
            ax.set_xlabel(f"slice {k}", fontsize=5, labelpad=1)
            if k == 0:
                ax.set_ylabel(name, fontsize=6)
                ax.text(
                    0.02, 0.98, "R", color="yellow", fontsize=5, va="top", transform=ax.transAxes
                )
                ax.text(
                    0.98,
                    0.98,
                    "L",
                    color="yellow",
                    fontsize=5,
                    va="top",
                    ha="right",
                    transform=ax.transAxes,
                )
    fig.suptitle(
        f"{pid}: DWI, 3D Grad-CAM and stacked 2D Grad-CAM of class stroke "
        "(each block on its own scale; lesion outlined)",
        fontsize=7,
    )
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=130, format="png")
    finally:
        plt.close(fig)
    return path


def _summary(pp: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for metric in ("relevance_mass", "pointing_game", "mask_auc"):
        a, b = pp[f"{metric}_3d"], pp[f"{metric}_2d_stacked"]
        ok = a.notna() & b.notna()
        diff = (a - b)[ok]
        p = wilcoxon(a[ok], b[ok]).pvalue if ok.sum() >= 5 and (diff != 0).any() else np.nan
        rows.append(
            {
                "metric": metric,
                "mean_3d": a.mean(),
                "mean_2d_stacked": b.mean(),
                "n_3d": int(a.notna().sum()),
                "n_2d": int(b.notna().sum()),
                "n_paired": int(ok.sum()),
                "wilcoxon_p": p,
            }
        )
    rows.append(
        {
            "metric": "chance_relevance_mass",
            "mean_3d": pp["chance_relevance_mass"].mean(),
            "mean_2d_stacked": pp["chance_relevance_mass"].mean(),
            "n_3d": len(pp),
            "n_2d": len(pp),
            "n_paired": len(pp),
            "wilcoxon_p": np.nan,
        }
    )
    rows.append(
        {
            "metric": "spearman_3d_vs_2d",
            "mean_3d": pp["spearman_3d_vs_2d"].mean(),
            "mean_2d_stacked": np.nan,
            "n_3d": int(pp["spearman_3d_vs_2d"].notna().sum()),
            "n_2d": np.nan,
            "n_paired": np.nan,
            "wilcoxon_p": np.nan,
        }
    )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- steps


def volume_setting(
    quick: bool = False,
    full: bool = False,
    seed: int = 0,
    grid=None,
    patients: int | None = None,
    epochs: int | None = None,
) -> Volume3DSetting:
    """``QUICK``, ``FULL`` or ``CPU`` with the given fields replaced (``patients`` 0 =
    all); an error if the grid does not fit ``gap3d``."""
    if quick and full:
        raise ExperimentError("--quick and --full exclude each other")
    s = Volume3DSetting(**asdict(QUICK if quick else FULL if full else CPU))
    s.seed = int(seed)
    if grid:
        s.grid = tuple(int(v) for v in grid)
    if patients is not None:
        s.patients = None if patients == 0 else int(patients)
    if epochs:
        s.epochs = int(epochs)
    check_input_shape("gap3d", (*s.grid, 1))
    s.grid = tuple(s.grid)
    return s


def trained_3d(cohort, s: Volume3DSetting, split, vols, quiet: bool) -> tuple:
    """The 3D model of this setting and split: reused from the cache, or trained there.
    Returns ``(model, model_dir_3d, reused)``."""
    tr, va, te, split_seed = split
    key = {"setting": asdict(s), "cohort": cohort.cohort_id, "train": tr, "val": va}
    model_dir_3d = (
        cache_dir() / "analyses" / NAME / "models" / f"{cohort.cohort_id}-{stable_hash(key, 12)}"
    )
    done = model_dir_3d / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == stable_hash(key, 16):
        stage(NAME, f"3D model reused: {model_dir_3d}", quiet)
        return load_model(model_dir_3d), model_dir_3d, True
    stage(NAME, f"training gap3d ({s.epochs} epochs max) -> {model_dir_3d}", quiet)
    t0 = time.perf_counter()
    (v_tr, y_tr), (v_va, y_va) = vols["train"], vols["val"]
    model3d = train_3d(v_tr["image"], y_tr, v_va["image"], y_va, model_dir_3d, s, quiet)
    card3d = make_card(
        "gap3d",
        model3d,
        ["no stroke", "stroke"],
        split=SimpleNamespace(train=tr, val=va, test=te, seed=split_seed),
        cohort={"id": cohort.cohort_id},
        preprocessing={
            "grid": list(s.grid),
            "crop": "head bounding box",
            "normalization": "zscore per volume",
        },
        training=asdict(s),
        label_source="any lesion_visible slice",
    )
    save_model(model3d, model_dir_3d, card3d)
    write_json_atomic(
        done,
        {"key": stable_hash(key, 16), "train_seconds": round(time.perf_counter() - t0, 1)},
    )
    return load_model(model_dir_3d), model_dir_3d, False


def compare_maps(settings, model3d, model_dir, card2d, cohort, te, v_te, proba, s) -> tuple:
    """Per test patient with a lesion: the 3D Grad-CAM and the stacked 2D Grad-CAMs scored
    against the lesion, and the figure's data. Empty when no test patient has a lesion."""
    les = np.flatnonzero(v_te["lesion"].reshape(len(te), -1).any(1))
    if len(les) == 0:
        return pd.DataFrame(), None
    x = v_te["image"][les][..., None]
    res = compute(
        model3d,
        x,
        layer=model3d.hypo_card["cam_layer"],
        methods=("gradcam",),
        classes=[1],
        resize=True,
        interpolation="bilinear",
    )
    cam3 = res["gradcam"][:, 0]
    stage(NAME, f"2D maps of {len(les)} lesion patients, stacked", settings.quiet)
    pre = dict(card2d.get("preprocessing") or {})
    config = PreprocessConfig(**pre) if pre else PreprocessConfig()
    store = build_slice_store(cohort, config, progress=settings.progress)
    size = int(store.config.size)
    model2d = load_model(model_dir, input_shape=(size, size, 1))
    sub = {k: v[les] for k, v in v_te.items()}
    pids = [te[i] for i in les]
    cam2 = stacked_2d_maps(model2d, card2d, store, cohort, pids, sub, s.grid)
    lesion, brain = sub["lesion"], sub["brain"]
    t3 = localisation_table(cam3, lesion, brain)
    t2 = localisation_table(cam2, lesion, brain)
    per_patient = pd.DataFrame(
        {
            "participant_id": pids,
            "p_stroke_3d": proba[les, 1],
            "lesion_voxels": t3["mask_pixels"],
            "chance_relevance_mass": t3["mask_pixels"] / brain.reshape(len(les), -1).sum(1),
            "relevance_mass_3d": t3["relevance_mass"],
            "relevance_mass_2d_stacked": t2["relevance_mass"],
            "pointing_game_3d": t3["pointing_game"],
            "pointing_game_2d_stacked": t2["pointing_game"],
            "mask_auc_3d": t3["auc"],
            "mask_auc_2d_stacked": t2["auc"],
            "spearman_3d_vs_2d": spearman_in_region(cam3, cam2, brain),
        }
    )
    big = int(np.argmax(per_patient["lesion_voxels"].to_numpy()))
    montage = (sub["image"][big], cam3[big], cam2[big], lesion[big], pids[big])
    return per_patient, montage


def _sections(cohort, s, split_source, split, model_dir, card2d, card3d, perf, summary, figs):
    tr, va, te, _ = split
    synthetic = " (synthetic: generated by hypo, not patient data)" if cohort.is_synthetic else ""
    region = "ground-truth brain." if cohort.is_synthetic else "head (grey value > 10)."
    return [
        {
            "heading": "Setting",
            "paragraphs": [
                f"Cohort `{cohort.cohort_id}`{synthetic}. Volumes cropped to the head's "
                f"bounding box and resampled (trilinear; masks nearest) to {s.grid} voxels "
                f"(rows x cols x slices, radiological view), z-scored per volume. Split: "
                f"{split_source}; {len(tr)} training, {len(va)} validation, {len(te)} test "
                f"patients. `gap3d` (input {tuple(card3d['input_shape'])}), up to {s.epochs} "
                f"epochs, batch {s.batch_size}, seed {s.seed}, class weights balanced, no "
                "augmentation. Label: a lesion visible on any slice. Grad-CAM of class stroke "
                f"at `{card3d['cam_layer']}` (pre-softmax score), trilinear to the grid. 2D "
                f"model: `{model_dir}` ({card2d.get('architecture')}), Grad-CAM at "
                f"`{card2d.get('cam_layer')}` per slice. Maps scored inside the " + region,
            ],
        },
        {
            "heading": "3D model on the test volumes (patient level)",
            "tables": [(perf, "Wilson and patient-bootstrap 95 % intervals.")],
        },
        {
            "heading": "3D relevance against the lesion: 3D model vs stacked 2D maps",
            "tables": [
                (
                    summary,
                    "Mean over test patients with a lesion; paired Wilcoxon signed-rank test "
                    "of 3D vs 2D.",
                )
            ]
            if len(summary)
            else [],
        },
        {"heading": "Figures", "figures": figs},
    ]


def run(
    settings: RunSettings, s: Volume3DSetting = CPU, split_seed: int = 0, n_boot: int = 2000
) -> dict:
    """Train (or reuse) the 3D model, score its maps and the stacked 2D maps, write the
    report; return the paths."""
    started = time.perf_counter()
    q = settings.quiet
    model_dir = check_model_dir(settings.model_dir)
    card2d = read_card(model_dir)
    cohort = training_cohort(settings)
    if not cohort.has_lesion_masks:
        raise ExperimentError(f"cohort {cohort.cohort_id}: no lesion masks to score maps")
    tr, va, te, split_source = split_for(cohort, card2d, s, split_seed)
    labels = patient_labels(cohort)
    stage(NAME, f"volumes on a {s.grid} grid: {len(tr)} train, {len(va)} val, {len(te)} test", q)
    vols = {}
    for part, ids in (("train", tr), ("val", va), ("test", te)):
        v = volumes(cohort, ids, s.grid, not q)
        vols[part] = (v, labels.reindex(ids).fillna(0).astype(int).to_numpy())
    split = (tr, va, te, split_seed)
    model3d, model_dir_3d, reused = trained_3d(cohort, s, split, vols, q)
    card3d = model3d.hypo_card
    stage(NAME, f"evaluating on {len(te)} test volumes", q)
    v_te, y_te = vols["test"]
    proba = model3d.predict(v_te["image"][..., None], batch_size=s.batch_size, verbose=0)
    perf = binary_table(y_te, proba[:, 1], np.asarray(te), n_boot=n_boot, seed=s.seed)
    per_patient, montage = compare_maps(
        settings, model3d, model_dir, card2d, cohort, te, v_te, proba, s
    )
    out = Path(settings.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    warnings, figs, summary = [], [], pd.DataFrame()
    if montage is None:
        warnings.append("No test patient has a lesion on the grid: no maps scored.")
    else:
        summary = _summary(per_patient)
        _montage(*montage, out / "figures" / "montage.png")
        figs.append(
            (
                "figures/montage.png",
                f"Like the paper's Figure 18: every slice of test patient {montage[-1]} "
                "(largest lesion), the 3D model's Grad-CAM and the 2D model's stacked "
                "per-slice Grad-CAMs of class stroke.",
            )
        )
    provenance = {
        "setting": asdict(s),
        "model_3d": {
            "folder": str(model_dir_3d),
            "reused": reused,
            "sha256": file_hash(model_dir_3d / "model.keras"),
        },
        "model_2d": {"folder": str(model_dir), "sha256": file_hash(model_dir / "model.keras")},
        "cohort": {"id": cohort.cohort_id, "synthetic": bool(cohort.is_synthetic)},
        "test_patients": te,
    }
    paths = write_experiment(
        out,
        NAME,
        tables={NAME: per_patient, "summary": summary, "performance": perf},
        sections=_sections(
            cohort, s, split_source, split, model_dir, card2d, card3d, perf, summary, figs
        ),
        config=settings.record_of(s, split_seed=split_seed, n_boot=n_boot),
        intro=[__doc__.split("\n\n")[0]],
        warnings=warnings,
        extra_provenance=provenance,
        started=started,
    )
    stage(NAME, f"report -> {out / 'report.md'}", q)
    return paths
