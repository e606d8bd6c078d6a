"""Cohort -> slice store -> CAMs -> anatomy -> features -> patient table -> join.

    python -m hypo.features --cohort DIR --model models/gap --out DIR
        [--layer NAME] [--method gradcam --method gradcampp] [--size 192]
        [--controls control_uniform,control_intensity] [--random-control]
        [--allow-training-patients]

Every stage is cached and resumable: the slice store (per cohort content and
preprocessing), the CAMs (chunked, :func:`hypo.cam.stream.compute_store`), the anatomy
(beside the store), the slice features (``slice_features.parquet`` with the key of its
inputs). Outputs under ``--out``: ``slice_features.parquet``, ``patient_features.*``
(+ data dictionary and Spearman matrix), ``features_joined.{parquet,csv}`` and
``features_joined_report.csv``, ``run.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from hypo._util import stable_hash, write_json_atomic, write_table_atomic


def _stage(msg: str) -> None:
    print(f"[hypo.features] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hypo.features", description=__doc__)
    ap.add_argument("--cohort", required=True, type=Path)
    ap.add_argument("--model", required=True, type=Path, help="model folder (model.keras + card)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--layer", default=None, help="CAM layer (default: the card's cam_layer)")
    ap.add_argument("--method", action="append", dest="methods", help="repeatable")
    ap.add_argument("--size", type=int, default=None, help="slice size (default: the card's)")
    ap.add_argument("--controls", default="control_uniform,control_intensity")
    ap.add_argument("--random-control", action="store_true", help="Grad-CAM of a randomised model")
    ap.add_argument("--seed", type=int, default=0, help="seed of the randomised control")
    ap.add_argument("--allow-training-patients", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    progress = not args.quiet

    import hypo.cohort as hc
    from hypo.features.aggregate import aggregate_patients, write_patient_tables
    from hypo.features.anatomy import AnatomyConfig, anatomy_for_store
    from hypo.features.join import join_participants, load_model_card, require_held_out
    from hypo.features.maps import FeatureConfig, features_for_store
    from hypo.preprocess import PreprocessConfig, build_slice_store

    _stage(f"cohort {args.cohort}")
    cohort = hc.load(args.cohort)
    card = load_model_card(args.model)
    pre = dict(card.get("preprocessing") or {})
    if args.size is not None:
        pre["size"] = args.size
    config = PreprocessConfig(**pre) if pre else PreprocessConfig()
    _stage(f"slice store ({config.size} px)")
    store = build_slice_store(cohort, config, progress=progress)

    # The CAM engine and Keras load only here: the table stages above and below do not
    # need them.
    from hypo.cam.stream import compute_store
    from hypo.nets.io import load_model

    model = load_model(args.model, input_shape=(config.size, config.size, 1))
    layer = args.layer or card.get("cam_layer")
    methods = tuple(args.methods or ("gradcam", "gradcampp"))
    cam_dir = args.out / "cams" / f"{layer or 'default'}"
    _stage(f"CAMs {methods} at layer {layer} -> {cam_dir}")
    cams = [compute_store(model, store, cam_dir, layer=layer, methods=methods, progress=progress)]
    if args.random_control:
        from hypo.cam import sanity

        names = [la.name for la in sanity._weighted_layers(model)]
        rdir = args.out / "cams" / f"{layer or 'default'}-random-s{args.seed}"
        _stage(f"randomised-weights control -> {rdir}")
        with sanity.randomised_weights(model, names, seed=args.seed):
            rc = compute_store(model, store, rdir, layer=layer, methods=("gradcam",),
                               progress=progress)  # fmt: skip
        cams.append(("control_random_model", rc))

    _stage("anatomy (cached beside the slice store)")
    acfg = AnatomyConfig()
    anatomy = anatomy_for_store(store, acfg, progress=progress)

    controls = tuple(c for c in args.controls.split(",") if c)
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
    feat_file = args.out / "slice_features.parquet"
    key_file = args.out / "slice_features.key.json"
    if (
        feat_file.exists()
        and key_file.exists()
        and json.loads(key_file.read_text()) == json.loads(json.dumps(key))
    ):
        _stage(f"slice features: reusing {feat_file}")
        sf = pd.read_parquet(feat_file)
    else:
        _stage("slice features")
        sf = features_for_store(store, anatomy, cams, controls=controls, config=fcfg,
                                progress=progress)  # fmt: skip
        write_table_atomic(feat_file, sf)
        write_json_atomic(key_file, key)

    _stage("per-patient aggregation")
    pt = aggregate_patients(sf, cohort_id=cohort.cohort_id)
    write_patient_tables(pt, args.out)
    _stage("join with participants.tsv")
    res = join_participants(pt, cohort.participants, cohort_id=cohort.cohort_id,
                            model_cards=args.model)  # fmt: skip
    paths = res.write(args.out)
    n_train = int(res.table["in_model_training"].sum())
    if n_train and not args.allow_training_patients:
        _stage(
            f"{n_train} patient(s) trained/validated the model: flagged in_model_training; "
            "analyses will refuse them (require_held_out)"
        )
    else:
        require_held_out(res.table, allow_training_patients=args.allow_training_patients)
    write_json_atomic(
        args.out / "run.json",
        {
            "argv": sys.argv if argv is None else list(argv),
            "cohort_id": cohort.cohort_id,
            "store": str(store.path),
            "anatomy": str(anatomy.path),
            "key_hash": stable_hash(key),
            "outputs": {k: str(v) for k, v in paths.items()},
            "n_patients": int(len(res.table)),
            "n_analysis_population": int(res.table["analysis_population"].sum()),
            "n_in_model_training": n_train,
        },
    )
    _stage(f"done -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
