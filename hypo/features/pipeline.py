"""One call from a cohort and a model to the joined patient table.

    res = run_features(cohort, "models/stroke-gap-128", "out/stroke")
    res.table        # one row per patient: features, participants.tsv columns, flags

Chains :func:`hypo.preprocess.build_slice_store` -> :func:`hypo.cam.stream.compute_store`
(plus the randomised-model control when asked) -> :func:`hypo.features.anatomy_for_store`
-> :func:`hypo.features.features_for_store` -> :func:`hypo.features.aggregate_patients`
-> :func:`hypo.features.join_participants` (with the model card's leakage flag). Every
stage is cached: the slice store and the anatomy under ``hypo.paths.cache_dir()``, the
CAMs under ``cam_dir`` (default ``out_dir/cams``), the slice features in
``out_dir/slice_features.parquet`` next to the key of their inputs. ``python -m
hypo.features`` and ``python -m analyses.asymmetry_vs_mrs`` both call it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from hypo._util import file_hash, stable_hash, write_json_atomic, write_table_atomic
from hypo.features.join import JoinResult

__all__ = ["DEFAULT_CONTROLS", "DEFAULT_METHODS", "run_features"]

DEFAULT_METHODS = ("gradcam", "gradcampp")
DEFAULT_CONTROLS = ("control_uniform", "control_intensity")


def _stderr_stage(prefix: str) -> Callable[[str], None]:
    def stage(msg: str) -> None:
        print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)

    return stage


@dataclass
class FeatureRun(JoinResult):
    """A feature run: the joined table and its report, and where its inputs are cached.

    Attributes
    ----------
    store : str
        The slice store the maps were computed on.
    anatomy : str
        The anatomy cache of that store.
    cam_dirs : list of str
        The CAM caches (the model's maps first, then the randomised-weights control).
    key_hash : str
        Hash of everything the slice features depend on.
    layer : str
        The CAM layer.
    """

    store: str = ""
    anatomy: str = ""
    cam_dirs: list = field(default_factory=list)
    key_hash: str = ""
    layer: str = ""


def run_features(
    cohort,
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    layer: str | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    controls: Sequence[str] = DEFAULT_CONTROLS,
    random_control: bool = False,
    progress: bool = True,
    *,
    size: int | None = None,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    random_classes: Sequence[int] | None = None,
    cam_dir: str | os.PathLike | None = None,
    allow_training_patients: bool = False,
    stage: Callable[[str], None] | None = None,
    run_info: dict | None = None,
    max_qc_fail_fraction: float | None = None,
    cam_fn: Callable | None = None,
) -> FeatureRun:
    """Cohort -> slice store -> CAMs -> anatomy -> slice features -> patients -> join.

    Parameters
    ----------
    cohort : Cohort or path
        A loaded :class:`hypo.cohort.Cohort` or its folder.
    model_dir : path
        Model folder (``model.keras`` + ``card.json``); its card gives the preprocessing,
        the CAM layer and the training/validation patients of the leakage flag.
    out_dir : path
        Where ``slice_features.parquet``, ``patient_features.*``, ``features_joined.*`` and
        ``run.json`` go (created).
    layer : str, optional
        CAM layer; default the card's ``cam_layer``.
    methods : sequence of str
        CAM methods (default Grad-CAM and Grad-CAM++).
    controls : sequence of str
        Image-made negative controls featurised beside the CAMs.
    random_control : bool
        Also Grad-CAM of the model with randomised weights (``control_random_model``).
    progress : bool
        tqdm bars on the long stages.
    size : int, optional
        Slice size in pixels; default the card's preprocessing size.
    seed : int
        Seed of the randomised-weights control.
    classes : sequence of int, optional
        Classes whose CAMs are computed; default all.
    random_classes : sequence of int, optional
        Classes of the randomised-weights control (default: as ``classes``); a control
        needs only the classes an analysis tests, and each class costs a gradient pass.
    cam_dir : path, optional
        CAM cache root (default ``out_dir/cams``); one sub-folder per layer, class
        selection and slice store (and per randomised control).
    allow_training_patients : bool
        Without it a table holding patients the model was trained or validated on is
        flagged (``in_model_training``) and a note printed; with it the flag is checked by
        :func:`hypo.features.join.require_held_out` with permission.
    stage : callable, optional
        ``stage(message)`` receives a line per stage (default: printed to stderr).
    run_info : dict, optional
        Extra entries for ``run.json`` (e.g. the command line).
    max_qc_fail_fraction : float, optional
        The run stops (:class:`hypo.features.anatomy_qc.AnatomyQCError`, naming the
        files) when more than this share of patients fail the anatomy QC (default 0.2,
        :class:`hypo.features.anatomy_qc.AnatomyQCConfig`). The QC table is written as
        ``anatomy_qc.csv``, returned as ``FeatureRun.anatomy_qc`` and its verdict joined
        to the patient table as ``anatomy_qc_pass`` / ``anatomy_qc_reason``.
    cam_fn : callable, optional
        ``cam_fn(store, cam_root) -> (cams, cam_dirs)`` computes the maps in place of the
        model's own CAMs (e.g. :func:`hypo.cam.bag.bag_cam_store` of an outcome model):
        ``cams`` as :func:`hypo.features.features_for_store` takes them, ``cam_dirs`` their
        folders. ``model_dir`` then only gives the card (preprocessing, ``cam_layer``,
        leakage flag); ``classes`` and ``random_control`` are the caller's business and
        must be left at their defaults.

    Returns
    -------
    FeatureRun
        ``table`` one row per patient (flags ``analysis_population``, ``in_model_training``)
        and the join ``report`` (a :class:`FeatureRun`, which also names the slice
        ``store``, the ``anatomy`` cache, the CAM caches ``cam_dirs``, ``key_hash`` and
        the ``layer``).
    """
    import hypo.cohort as hc
    from hypo.features import maps as features_maps
    from hypo.features import swelling as features_swelling
    from hypo.features.aggregate import aggregate_patients, write_patient_tables
    from hypo.features.anatomy import AnatomyConfig, anatomy_for_store
    from hypo.features.anatomy_qc import anatomy_qc, check_anatomy_qc
    from hypo.features.join import join_participants, require_held_out
    from hypo.features.maps import FeatureConfig, features_for_store
    from hypo.nets.cards import read_card
    from hypo.preprocess import PreprocessConfig, build_slice_store

    stage = stage or _stderr_stage("hypo.features")
    out_dir = Path(out_dir)
    model_dir = Path(model_dir)
    if not isinstance(cohort, hc.Cohort):
        stage(f"cohort {cohort}")
        cohort = hc.load(cohort)
    card = read_card(model_dir)
    pre = dict(card.get("preprocessing") or {})
    if size is not None:
        pre["size"] = int(size)
    config = PreprocessConfig(**pre) if pre else PreprocessConfig()
    stage(f"slice store ({config.size} px)")
    store = build_slice_store(cohort, config, progress=progress)

    layer = layer or card.get("cam_layer")
    methods = tuple(methods)
    cam_root = Path(cam_dir) if cam_dir is not None else out_dir / "cams"
    if cam_fn is not None:
        if classes is not None or random_control:
            raise ValueError("run_features: cam_fn computes the maps; classes and "
                             "random_control do not apply")  # fmt: skip
        stage(f"maps of {model_dir} -> {cam_root}")
        cams, cam_dirs = cam_fn(store, cam_root)
        cams, cam_dirs = list(cams), [str(d) for d in cam_dirs]
    else:
        cams, cam_dirs = _model_cams(model_dir, store, config, layer, methods, cam_root,
                                     classes, random_control, random_classes, seed,
                                     progress, stage)  # fmt: skip
    stage("anatomy (cached beside the slice store)")
    acfg = AnatomyConfig()
    anatomy = anatomy_for_store(store, acfg, progress=progress, cohort=cohort)
    qc = anatomy_qc(anatomy, store)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table_atomic(out_dir / "anatomy_qc.csv", qc)
    n_fail = int((~qc["qc_pass"]).sum())
    stage(f"anatomy QC: {n_fail} of {len(qc)} patient(s) failed -> {out_dir / 'anatomy_qc.csv'}")
    check_anatomy_qc(qc, max_qc_fail_fraction)

    controls = tuple(c for c in controls if c)
    fcfg = FeatureConfig()
    key = {
        "store": str(store.path),
        "anatomy": acfg.key(),
        "features": asdict(fcfg),
        "controls": list(controls),
        "cams": [
            (c[0] if isinstance(c, tuple) else "cam", (c[1] if isinstance(c, tuple) else c)
             .manifest.get("key_hash"))
            for c in cams
        ],
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    feat_file = out_dir / "slice_features.parquet"
    key_file = out_dir / "slice_features.key.json"
    if (
        feat_file.exists()
        and key_file.exists()
        and json.loads(key_file.read_text()) == json.loads(json.dumps(key))
    ):
        stage(f"slice features: reusing {feat_file}")
        sf = pd.read_parquet(feat_file)
    else:
        stage("slice features")
        # The image-made controls do not depend on the model: one file beside the anatomy
        # serves every model of the store (keyed by everything they depend on, and the
        # code that computes them).
        ckey = {"anatomy": acfg.key(), "features": asdict(fcfg), "controls": list(controls),
                "code": file_hash(features_maps.__file__)}  # fmt: skip
        ccache = Path(anatomy.path) / "control_features" / f"{stable_hash(ckey)}.parquet"
        sf = features_for_store(store, anatomy, cams, controls=controls, config=fcfg,
                                progress=progress, control_cache=ccache)  # fmt: skip
        write_table_atomic(feat_file, sf)
        write_json_atomic(key_file, key)

    stage("per-patient aggregation")
    pt = aggregate_patients(sf, cohort_id=cohort.cohort_id)
    if "lesion" in store.masks and "lesion_side" in pt.columns:
        stage("image signs of swelling (sulcal effacement, ventricle compression)")
        sides = dict(zip(pt["participant_id"].astype(str), pt["lesion_side"].astype(str)))
        # Like the controls, the signs depend on the store, its anatomy and the sides only:
        # one file beside the anatomy serves every model of the store.
        skey = {
            "anatomy": acfg.key(),
            "sides": sides,
            "code": file_hash(features_swelling.__file__),
        }
        scache = Path(anatomy.path) / "swelling" / f"{stable_hash(skey)}.parquet"
        if scache.is_file():
            sw = pd.read_parquet(scache)
        else:
            sw = features_swelling.swelling_for_store(store, anatomy, sides)
            sw = sw.drop(columns="swelling_note")
            scache.parent.mkdir(parents=True, exist_ok=True)
            write_table_atomic(scache, sw)
        pt = pt.merge(sw, on="participant_id", how="left")
    write_patient_tables(pt, out_dir)
    stage("join with participants.tsv")
    res = join_participants(pt, cohort.participants, cohort_id=cohort.cohort_id,
                            model_cards=model_dir)  # fmt: skip
    verdict = qc.set_index("participant_id")[["qc_pass", "qc_reason"]]
    pid_col = res.table["participant_id"].astype(str)
    res.table["anatomy_qc_pass"] = pid_col.map(verdict["qc_pass"]).astype("boolean")
    res.table["anatomy_qc_reason"] = pid_col.map(verdict["qc_reason"])
    res.anatomy_qc = qc
    paths = res.write(out_dir)
    n_train = int(res.table["in_model_training"].sum())
    if n_train and not allow_training_patients:
        stage(
            f"{n_train} patient(s) trained/validated the model: flagged in_model_training; "
            "analyses will refuse them (require_held_out)"
        )
    else:
        require_held_out(res.table, allow_training_patients=allow_training_patients)
    write_json_atomic(
        out_dir / "run.json",
        {
            **dict(run_info or {}),
            "cohort_id": cohort.cohort_id,
            "model": str(model_dir),
            "store": str(store.path),
            "anatomy": str(anatomy.path),
            "cams": cam_dirs,
            "key_hash": stable_hash(key),
            "outputs": {
                **{k: str(v) for k, v in paths.items()},
                "anatomy_qc": str(out_dir / "anatomy_qc.csv"),
            },
            "n_patients": int(len(res.table)),
            "n_analysis_population": int(res.table["analysis_population"].sum()),
            "n_in_model_training": n_train,
        },
    )
    stage(f"done -> {out_dir}")
    return FeatureRun(
        table=res.table,
        report=res.report,
        anatomy_qc=qc,
        store=str(store.path),
        anatomy=str(anatomy.path),
        cam_dirs=list(cam_dirs),
        key_hash=stable_hash(key),
        layer=layer,
    )


def _model_cams(model_dir, store, config, layer, methods, cam_root, classes, random_control,
                random_classes, seed, progress, stage):  # fmt: skip
    """The model's own CAMs of ``store`` (and the randomised-weights control)."""
    # The CAM engine and Keras load only here: the table stages do not need them.
    from hypo.cam.stream import compute_store
    from hypo.nets.io import load_model

    model = load_model(model_dir, input_shape=(config.size, config.size, 1))
    # A cache folder per slice store and class selection: compute_store refuses to mix
    # inputs in one folder, and a rebuilt store (new preprocessing) must not meet old maps.
    skey = stable_hash(store.path.name, 8)
    tag = "" if classes is None else "-c" + "_".join(str(int(c)) for c in classes)
    # "-f32": maps are computed in float32 whatever the model's policy; caches of the
    # bfloat16 era (other numbers) live in folders without it and are never reused.
    cdir = cam_root / f"{layer or 'default'}{tag}-f32-s{skey}"
    stage(f"CAMs {methods} at layer {layer} -> {cdir}")
    kw = {} if classes is None else {"classes": tuple(int(c) for c in classes)}
    cams = [compute_store(model, store, cdir, layer=layer, methods=methods, progress=progress,
                          **kw)]  # fmt: skip
    cam_dirs = [str(cdir)]
    if random_control:
        from hypo.cam import sanity

        names = [la.name for la in sanity.weighted_layers(model)]
        rsel = classes if random_classes is None else random_classes
        rtag = "" if rsel is None else "-c" + "_".join(str(int(c)) for c in rsel)
        rdir = cam_root / f"{layer or 'default'}-random-s{seed}{rtag}-f32-s{skey}"
        stage(f"randomised-weights control -> {rdir}")
        rkw = kw if random_classes is None else {"classes": tuple(int(c) for c in random_classes)}
        with sanity.randomised_weights(model, names, seed=seed):
            rc = compute_store(model, store, rdir, layer=layer, methods=("gradcam",),
                               progress=progress, **rkw)  # fmt: skip
        cams.append(("control_random_model", rc))
        cam_dirs.append(str(rdir))

    return cams, cam_dirs
