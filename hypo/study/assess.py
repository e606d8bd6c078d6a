"""Evaluate a trained model on its test patients, and re-evaluate a shipped one.

``evaluate_on_store`` is the evaluation step of ``python -m analyses.train_models``: the
model's predictions on the test patients' slices of a slice store, turned into the paper's
tables (:mod:`hypo.nets.evaluation`) and, for an mRS model on a synthetic cohort, the
oracle (:mod:`hypo.study.oracle`). The command line re-runs it for a model folder without
retraining (after the evaluation gained a table, or to check a shipped model)::

    python -m hypo.study.assess models/mrs-gap-128 [--cohort DIR] [--n-boot 2000]

It rebuilds (or reuses) the slice store from the card's ``preprocessing`` on the card's
cohort, evaluates on the card's ``test_patients``, rewrites ``evaluation*`` files and
replaces the card's ``metrics.test`` (atomically), recording the command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import hypo.cohort as hc
from hypo._util import write_json_atomic
from hypo.nets.cards import CARD_FILE, read_card
from hypo.nets.evaluation import evaluate
from hypo.nets.io import load_model
from hypo.nets.labels import task_labels
from hypo.nets.training import task_of
from hypo.paths import data_dir, default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.study.oracle import mrs_oracle, write_oracle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def reader_lesion_volume_ml(table: pd.DataFrame) -> pd.Series:
    """Lesion volume per patient from the reader's slice areas x slice thickness, mL."""
    vol = table["lesion_area_mm2"].fillna(0) * table["slice_thickness_mm"]
    return vol.groupby(table["participant_id"].astype(str)).sum() / 1000.0


def evaluate_on_store(
    model,
    store,
    architecture: str,
    test_patients,
    out_dir,
    *,
    cohort=None,
    train_patients=None,
    batch_size: int = 64,
    n_boot: int = 2000,
    seed: int = 0,
):
    """Predict the test patients' slices, evaluate and write the tables into ``out_dir``.

    Parameters
    ----------
    model : keras.Model
    store : SliceStore
        The slice store the model was trained on (same preprocessing).
    architecture : str
        The card's architecture (``mrs`` -> the 3-class task, else the stroke task).
    test_patients : iterable of str
    out_dir : path
        Model folder: ``evaluation*.csv|.md`` (and ``evaluation_oracle.*``) go there.
    cohort : Cohort, optional
        With a synthetic cohort and ``train_patients``, an mRS model also gets its oracle.

    Returns
    -------
    hypo.nets.evaluation.Evaluation
    """

    task = task_of(architecture)
    table = store.table
    sl = task_labels(task, table)
    labels = np.full(len(table), -1, dtype=np.int64)
    labels[sl.index] = sl.y
    pid = table["participant_id"].astype(str).to_numpy()
    test = {str(p) for p in test_patients}
    rows = np.flatnonzero(np.isin(pid, sorted(test)) & (labels >= 0))
    if len(rows) == 0:
        raise ValueError(
            f"slice store {store.path}: none of the {len(test)} test patients has a labelled "
            f"slice for the {task} task"
        )
    x = np.asarray(store.images[rows], dtype=np.float32)[..., None]
    proba = model.predict(x, batch_size=batch_size, verbose=0)
    kw = {}
    if task == "stroke" and "lesion_area_mm2" in table.columns:
        kw["lesion_volume_ml"] = reader_lesion_volume_ml(table)
    ev = evaluate(task, labels[rows], proba, pid[rows], n_boot=n_boot, seed=seed, **kw)
    ev.write(out_dir)
    if task == "mrs" and train_patients is not None and getattr(cohort, "is_synthetic", False):
        # The ceiling of the same test patients: their true covariates (issue: oracle).
        les = table.iloc[rows][labels[rows] > 0]
        counts = les.groupby(les["participant_id"].astype(str)).size()
        every = table[table["lesion_visible"].astype(bool)]
        every = every.groupby(every["participant_id"].astype(str)).size()
        write_oracle(
            out_dir, mrs_oracle(cohort, train_patients, sorted(test), counts, every, table)
        )
    return ev


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m hypo.study.assess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model", type=Path, help="model folder (model.keras + card.json)")
    p.add_argument("--cohort", type=Path, default=None, help="the model's cohort (default dev)")
    p.add_argument("--n-boot", type=int, default=2000, help="patient bootstrap replicates")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where evaluation.* and the updated card.json go (default "
        "HYPO_DATA/assess/<model folder name>; pass the model folder itself to update a "
        "shipped model in place)",
    )
    args = p.parse_args(argv)
    out = args.out or data_dir() / "assess" / args.model.resolve().name
    out.mkdir(parents=True, exist_ok=True)

    card = read_card(args.model)
    for k in ("test_patients", "train_patients", "preprocessing", "cohort"):
        if not card.get(k):
            print(f"error: {args.model / CARD_FILE}: the card has no {k!r}", file=sys.stderr)
            return 2
    cohort = hc.load(args.cohort or default_cohort_dir("dev"))
    if cohort.cohort_id != card["cohort"].get("id"):
        print(
            f"error: {args.model}: trained on cohort {card['cohort'].get('id')!r}, but "
            f"{cohort.root} is {cohort.cohort_id!r}; pass the model's cohort with --cohort",
            file=sys.stderr,
        )
        return 2
    store = build_slice_store(cohort, PreprocessConfig(**card["preprocessing"]))
    model = load_model(args.model)
    ev = evaluate_on_store(
        model, store, card["architecture"], card["test_patients"], out,
        cohort=cohort, train_patients=card["train_patients"], batch_size=args.batch_size,
        n_boot=args.n_boot, seed=int(card.get("training", {}).get("seed", 0)),
    )  # fmt: skip
    card["metrics"] = {**card.get("metrics", {}), "test": ev.card_metrics()}
    card["evaluation_command"] = "python -m hypo.study.assess " + shlex.join(argv)
    write_json_atomic(out / CARD_FILE, card)
    print((out / "evaluation.md").read_text())
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
