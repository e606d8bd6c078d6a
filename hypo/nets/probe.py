"""Does a CNN's representation carry the outcome? A linear probe on frozen features.

The mRS model has to tell the outcome groups apart on lesion slices. When it fails, two
questions remain: is the outcome signal in its features at all, and does the fitted head
pick it up or fit the training patients' particulars? The probe answers both with the
features frozen: L2-penalised logistic regressions of poor outcome (mRS 3-6 vs 0-2) on
the layer's activations over the lesion slices of the training patients, one per penalty
on a grid, the penalty picked on the validation patients (slice AUC), every fit scored
on the training, validation and test patients (slice AUC, patient AUC of the mean score,
and the score's correlation with the log of the reader's lesion area, the slices' main
outcome signal). The lesion-area floor of :mod:`hypo.study.oracle` is scored on the same
slices for comparison::

    python -m hypo.nets.probe MODEL [--split-of MRS_MODEL] [--layer head_relu]

``MODEL`` is any model folder (e.g. a stroke model trained with ``--exclude-test-of``);
its features are read on the patients of ``--split-of``'s card (default: its own). A model
that trained or validated on one of those test patients is refused. Writes
``probe_<layer>.csv`` and ``.md`` into ``--out`` (default ``MODEL``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import hypo.cohort as hc
from hypo._util import atomic_path
from hypo.nets.cards import leaked_patients, read_card
from hypo.nets.io import load_model
from hypo.paths import default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Inverse L2 penalties of the probe (scikit-learn's ``C``; features standardised).
PROBE_CS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)
PARTS = ("train", "val", "test")


def _auc(y, s) -> float:

    y = np.asarray(y, bool)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _scores(part: dict, score: np.ndarray) -> dict:
    pid = pd.Series(part["patients"])
    per_patient = pd.DataFrame({"p": pid, "s": score, "y": part["y"]}).groupby("p").mean()
    r = np.corrcoef(score, part["area"])[0, 1] if np.std(score) > 0 else float("nan")
    return {
        "auc": _auc(part["y"], score),
        "patient_auc": _auc(per_patient["y"] > 0.5, per_patient["s"]),
        "r_log_area": float(r),
        "n_slices": int(len(score)),
        "n_patients": int(pid.nunique()),
    }


def linear_probe(parts: dict, cs=PROBE_CS, seed: int = 0) -> pd.DataFrame:
    """Fit the probe for every penalty and score it on every part.

    Parameters
    ----------
    parts : dict
        ``{"train" | "val" | "test": {"features": (n, k), "y": (n,) bool poor outcome,
        "area": (n,) log lesion area, "patients": (n,) str}}``.
    cs : sequence of float
        Inverse penalties (features are standardised on the training slices).

    Returns
    -------
    pd.DataFrame
        One row per (probe, part): ``probe`` (``C=...`` or ``lesion area``), ``C``,
        ``part``, ``auc``, ``patient_auc``, ``r_log_area``, ``n_slices``, ``n_patients``,
        ``chosen`` (the penalty with the highest validation AUC; ties: stronger penalty).
    """

    missing = [p for p in PARTS if p not in parts]
    if missing:
        raise ValueError(f"linear_probe: parts {missing} are missing; expected {PARTS}")
    tr = parts["train"]
    if len(np.unique(tr["y"])) < 2:
        raise ValueError("linear_probe: the training slices hold only one outcome group")
    rows = []
    for c in cs:
        clf = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=seed),
        )
        clf.fit(tr["features"], tr["y"])
        for name in PARTS:
            s = clf.decision_function(parts[name]["features"])
            rows.append({"probe": f"C={c:g}", "C": c, "part": name, **_scores(parts[name], s)})
    for name in PARTS:
        rows.append(
            {"probe": "lesion area", "C": np.nan, "part": name,
             **_scores(parts[name], parts[name]["area"])}
        )  # fmt: skip
    out = pd.DataFrame(rows)
    val = out[(out["part"] == "val") & out["C"].notna()].sort_values("C")
    best_c = val.loc[val["auc"].idxmax(), "C"]  # idxmax: first (= strongest penalty) on ties
    out["chosen"] = out["C"] == best_c
    return out


def probe_parts(model, layer: str, store, split: dict, batch_size: int = 128) -> dict:
    """Features of ``model`` at ``layer`` on the lesion slices of each part's patients
    (patients with a 3-month mRS only)."""

    try:
        out = model.get_layer(layer).output
    except ValueError:
        names = [lay.name for lay in model.layers]
        raise ValueError(
            f"probe: model {model.name} has no layer {layer!r}; it has {names}"
        ) from None
    feat = keras.Model(model.inputs, out)
    t = store.table
    for col in ("participant_id", "lesion_visible", "lesion_area_mm2", "mrs_3months"):
        if col not in t.columns:
            raise ValueError(f"probe: slice store {store.path} has no {col!r} column")
    pid = t["participant_id"].astype(str).to_numpy()
    mrs = pd.to_numeric(t["mrs_3months"], errors="coerce").to_numpy(float)
    lesion = (pd.to_numeric(t["lesion_visible"], errors="coerce") == 1).to_numpy() & np.isfinite(
        mrs
    )
    parts = {}
    for name in PARTS:
        rows = np.flatnonzero(lesion & np.isin(pid, [str(p) for p in split[name]]))
        if len(rows) == 0:
            raise ValueError(f"probe: no lesion slice with an mRS among the {name} patients")
        f = feat.predict(np.asarray(store.images[rows], np.float32)[..., None],
                         batch_size=batch_size, verbose=0)  # fmt: skip
        parts[name] = {
            "features": f.reshape(len(rows), -1).astype(np.float64),
            "y": mrs[rows] >= 3,
            "area": np.log1p(pd.to_numeric(t["lesion_area_mm2"]).fillna(0).to_numpy(float)[rows]),
            "patients": pid[rows],
        }
    return parts


def to_markdown(table: pd.DataFrame, title: str) -> str:
    wide = table.pivot_table(index="probe", columns="part", values=["auc", "patient_auc",
                             "r_log_area"], sort=False)  # fmt: skip
    chosen = set(table.loc[table["chosen"], "probe"])
    n = table[table["probe"] == "lesion area"].set_index("part")
    lines = [
        f"# {title}",
        "",
        "Poor outcome (mRS 3-6 vs 0-2) on lesion slices. Slices: "
        + ", ".join(
            f"{p} {n.loc[p, 'n_slices']} ({n.loc[p, 'n_patients']} patients)" for p in PARTS
        )
        + ". `*` = penalty chosen on the validation AUC.",
        "",
        "| probe | AUC train | AUC val | AUC test | patient AUC test | r(score, log area) test |",
        "|---|---|---|---|---|---|",
    ]
    for probe in wide.index:
        a = wide.loc[probe]
        mark = " *" if probe in chosen else ""
        lines.append(
            f"| {probe}{mark} | {a[('auc', 'train')]:.3f} | {a[('auc', 'val')]:.3f} | "
            f"{a[('auc', 'test')]:.3f} | {a[('patient_auc', 'test')]:.3f} | "
            f"{a[('r_log_area', 'test')]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m hypo.nets.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model", type=Path, help="model folder whose features are probed")
    p.add_argument("--split-of", type=Path, default=None,
                   help="model folder whose card gives the train/val/test patients (default: MODEL)")  # fmt: skip
    p.add_argument("--layer", default="head_relu", help="layer whose output is probed")
    p.add_argument("--cohort", type=Path, default=None, help="the cohort (default dev)")
    p.add_argument("--out", type=Path, default=None, help="folder for probe_<layer>.* (MODEL)")
    args = p.parse_args(argv)

    card = read_card(args.model)
    split_card = read_card(args.split_of) if args.split_of else card
    for k in ("train_patients", "val_patients", "test_patients"):
        if not split_card.get(k):
            print(f"error: {args.split_of or args.model}: the card has no {k!r}", file=sys.stderr)
            return 2
    leak = leaked_patients(card, split_card) if args.split_of else []
    if leak:
        print(
            f"error: {args.model} trained or validated on {len(leak)} test patients of "
            f"{args.split_of} (e.g. {leak[:3]}); train it with --exclude-test-of {args.split_of}",
            file=sys.stderr,
        )
        return 2
    cohort = hc.load(args.cohort or default_cohort_dir("dev"))
    if cohort.cohort_id != card.get("cohort", {}).get("id"):
        print(f"error: {args.model} was trained on cohort {card.get('cohort', {}).get('id')!r}, "
              f"not {cohort.cohort_id!r}; pass it with --cohort", file=sys.stderr)  # fmt: skip
        return 2
    store = build_slice_store(cohort, PreprocessConfig(**card["preprocessing"]))
    split = {p: split_card[f"{p}_patients"] for p in PARTS}
    parts = probe_parts(load_model(args.model), args.layer, store, split)
    table = linear_probe(parts)
    out = args.out or args.model
    out.mkdir(parents=True, exist_ok=True)
    title = f"Linear probe of {args.model.name} at `{args.layer}`"
    md = to_markdown(table, title) + (
        f"\nPatients from `{args.split_of or args.model}`. Command: "
        f"`python -m hypo.nets.probe {shlex.join(argv)}`\n"
    )
    stem = f"probe_{args.layer}"
    with atomic_path(out / f"{stem}.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
