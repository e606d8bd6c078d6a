"""Test-set evaluation shaped like the paper's Tables 2 and 3.

Every proportion (accuracy, sensitivity, specificity, per-class sensitivity) comes with
a Wilson 95 % interval (as the paper) and a patient-clustered bootstrap interval:
slices of one patient are correlated, so the bootstrap resamples patients, which the
Wilson interval (slices treated as independent) does not. The paper's "AUC" equals
(sensitivity + specificity) / 2 in every row of its Table 2, i.e. the AUC of the hard
0/1 prediction; both that (``balanced_accuracy``) and the ROC AUC of the probabilities
(``auc``) are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from hypo._util import markdown_table as _markdown_table
from hypo._util import rng_for, write_table_atomic, write_text_atomic
from hypo.intervals import wilson_ci

#: Lesion-volume bins (mL) for the stroke model's sensitivity by volume.
VOLUME_BINS_ML = (0.0, 1.0, 5.0, 20.0, 70.0, np.inf)


def cluster_bootstrap_ci(
    successes,
    trials,
    patient_ids,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile interval of ``sum(successes) / sum(trials)`` resampling patients.

    Parameters
    ----------
    successes, trials : array of 0/1 (or counts), one entry per slice
        E.g. for sensitivity: ``successes = (y == 1) & (pred == 1)``, ``trials = y == 1``.
    patient_ids : array of str, one per slice
        The resampling unit.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Same seed and inputs -> same interval.
    """
    s = np.asarray(successes, dtype=float)
    t = np.asarray(trials, dtype=float)
    codes, uniq = pd.factorize(pd.Series(np.asarray(patient_ids).astype(str)), sort=True)
    P = len(uniq)
    if P == 0 or t.sum() == 0:
        return (np.nan, np.nan)
    ps = np.bincount(codes, weights=s, minlength=P)
    pt = np.bincount(codes, weights=t, minlength=P)
    rng = rng_for(seed, "cluster-bootstrap")
    draws = rng.integers(0, P, size=(int(n_boot), P))
    num, den = ps[draws].sum(axis=1), pt[draws].sum(axis=1)
    ok = den > 0
    stat = num[ok] / den[ok]
    lo, hi = np.quantile(stat, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _row(metric, k, n, patients, n_boot, seed, successes, trials) -> dict:
    est = k / n if n else np.nan
    wl, wh = wilson_ci(k, n)
    bl, bh = cluster_bootstrap_ci(successes, trials, patients, n_boot, seed)
    return {
        "metric": metric,
        "estimate": est,
        "wilson_low": wl,
        "wilson_high": wh,
        "boot_low": bl,
        "boot_high": bh,
        "k": int(k),
        "n": int(n),
    }


def _scalar(metric, value, n) -> dict:
    nan = np.nan
    return {
        "metric": metric,
        "estimate": float(value),
        "wilson_low": nan,
        "wilson_high": nan,
        "boot_low": nan,
        "boot_high": nan,
        "k": np.nan,
        "n": int(n),
    }


def _validate(y_true, proba, patient_ids, n_classes=None):
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    pid = np.asarray(patient_ids).astype(str)
    if p.ndim != 2 or len(p) != len(y) or len(pid) != len(y):
        raise ValueError(
            f"evaluation: y_true {y.shape}, proba {p.shape}, patient_ids {pid.shape}; "
            "expected n labels, (n, n_classes) probabilities and n patient ids"
        )
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"evaluation: proba has {p.shape[1]} classes; expected {n_classes}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"evaluation: labels {np.unique(y).tolist()} outside 0..{p.shape[1] - 1}")
    return y, p, pid


def binary_table(
    y, p_pos, patients, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Accuracy, sensitivity, specificity (with CIs), AUC, balanced accuracy, NLL."""
    y = np.asarray(y).astype(int)
    p_pos = np.asarray(p_pos, dtype=float)
    pred = (p_pos >= threshold).astype(int)
    correct = pred == y
    pos, neg = y == 1, y == 0
    rows = [
        _row("accuracy", correct.sum(), len(y), patients, n_boot, seed, correct, np.ones_like(y)),
        _row("sensitivity", (correct & pos).sum(), pos.sum(), patients, n_boot, seed,
             correct & pos, pos),
        _row("specificity", (correct & neg).sum(), neg.sum(), patients, n_boot, seed,
             correct & neg, neg),
    ]  # fmt: skip
    both = pos.any() and neg.any()
    rows.append(_scalar("auc", roc_auc_score(y, p_pos) if both else np.nan, len(y)))
    sens, spec = rows[1]["estimate"], rows[2]["estimate"]
    rows.append(_scalar("balanced_accuracy", (sens + spec) / 2, len(y)))
    pp = np.clip(p_pos, 1e-15, 1 - 1e-15)
    rows.append(_scalar("nll", log_loss(y, np.c_[1 - pp, pp], labels=[0, 1]), len(y)))
    return pd.DataFrame(rows)


@dataclass
class Evaluation:
    """Tidy evaluation tables of one model on one test set.

    Attributes
    ----------
    image : DataFrame
        Image (slice) level: one row per metric with ``estimate``, Wilson and
        patient-bootstrap bounds, ``k``/``n``.
    patient : DataFrame
        Patient level. Stroke model: a patient is positive if any slice is (the reader
        marked a lesion on any slice); score = the patient's maximum slice probability,
        so "any slice positive" and "max probability >= threshold" agree. mRS model: see
        :func:`evaluate_mrs`.
    by_volume : DataFrame
        Stroke model: sensitivity per lesion-volume bin (image and patient level).
    classes : list of str
    """

    image: pd.DataFrame
    patient: pd.DataFrame = field(default_factory=pd.DataFrame)
    by_volume: pd.DataFrame = field(default_factory=pd.DataFrame)
    classes: list = field(default_factory=list)

    def metric(self, name: str, level: str = "image") -> float:
        t = getattr(self, level)
        return float(t.loc[t["metric"] == name, "estimate"].iloc[0])

    def card_metrics(self) -> dict:
        """Flat dict for a model card's ``metrics.test``."""
        out = {}
        for _, r in self.image.iterrows():
            out[r["metric"]] = _f(r["estimate"])
            if not np.isnan(r["wilson_low"]):
                out[r["metric"] + "_ci"] = [_f(r["wilson_low"]), _f(r["wilson_high"])]
                out[r["metric"] + "_ci_patient_bootstrap"] = [_f(r["boot_low"]), _f(r["boot_high"])]
        out["n_images"] = int(self.image["n"].max())
        if len(self.patient):
            out["patient_level"] = {
                r["metric"]: _f(r["estimate"]) for _, r in self.patient.iterrows()
            }
        return out

    def write(self, out_dir, stem: str = "evaluation") -> None:
        """``<stem>_image.csv``, ``_patient.csv``, ``_by_volume.csv`` and ``<stem>.md``."""

        out_dir = Path(out_dir)
        write_table_atomic(out_dir / f"{stem}_image.csv", self.image)
        if len(self.patient):
            write_table_atomic(out_dir / f"{stem}_patient.csv", self.patient)
        if len(self.by_volume):
            write_table_atomic(out_dir / f"{stem}_by_volume.csv", self.by_volume)
        parts = ["## Image level\n", markdown_table(_pretty(self.image))]
        if len(self.patient):
            parts += ["\n## Patient level\n", markdown_table(_pretty(self.patient))]
        if len(self.by_volume):
            parts += ["\n## Sensitivity by lesion volume\n", markdown_table(self.by_volume)]
        write_text_atomic(out_dir / f"{stem}.md", "\n".join(parts) + "\n")


def _f(x):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def evaluate_stroke(
    y_true,
    proba,
    patient_ids,
    lesion_volume_ml: pd.Series | None = None,
    threshold: float = 0.5,
    n_boot: int = 2000,
    seed: int = 0,
    volume_bins=VOLUME_BINS_ML,
    class_names=("no stroke", "stroke"),
) -> Evaluation:
    """Evaluate the binary stroke model (image and patient level, volume bins).

    Parameters
    ----------
    y_true : array of {0, 1}
        Reader's slice label (``lesion_visible``).
    proba : array (n, 2)
        Predicted class probabilities.
    patient_ids : array of str
    lesion_volume_ml : pandas.Series, optional
        Lesion volume per patient (index ``participant_id``), millilitres.
    threshold : float
        Decision threshold on the stroke probability.
    n_boot, seed : bootstrap replicates and seed.
    """
    y, p, pid = _validate(y_true, proba, patient_ids, 2)
    image = binary_table(y, p[:, 1], pid, threshold, n_boot, seed)
    df = pd.DataFrame({"pid": pid, "y": y, "p": p[:, 1]})
    per = df.groupby("pid", sort=True).agg(y=("y", "max"), p=("p", "max"))
    patient = binary_table(
        per["y"].to_numpy(), per["p"].to_numpy(), per.index.to_numpy(), threshold, n_boot, seed
    )
    by_volume = pd.DataFrame()
    if lesion_volume_ml is not None:
        by_volume = _sensitivity_by_volume(df, per, lesion_volume_ml, threshold, volume_bins)
    return Evaluation(image, patient, by_volume, list(class_names))


def _sensitivity_by_volume(df, per, volume, threshold, bins) -> pd.DataFrame:
    vol = pd.Series(volume, dtype=float)
    vol.index = vol.index.astype(str)
    missing = sorted(set(per.index[per["y"] == 1]) - set(vol.dropna().index))
    if missing:
        raise ValueError(
            f"sensitivity by volume: no lesion volume for lesion patient(s) {missing[:5]}"
        )
    labels = [f"{lo:g}-{hi:g} mL" for lo, hi in zip(bins[:-1], bins[1:])]
    cut = pd.cut(vol, bins=list(bins), labels=labels, right=True, include_lowest=True)
    rows = []
    for lab in labels:
        pts = set(cut.index[cut == lab])
        img = df[df["pid"].isin(pts) & (df["y"] == 1)]
        pat = per[per.index.isin(pts) & (per["y"] == 1)]
        k_i, n_i = int((img["p"] >= threshold).sum()), len(img)
        k_p, n_p = int((pat["p"] >= threshold).sum()), len(pat)
        wl, wh = wilson_ci(k_i, n_i)
        pl, ph = wilson_ci(k_p, n_p)
        rows.append(
            {
                "volume_bin": lab,
                "image_sensitivity": k_i / n_i if n_i else np.nan,
                "image_wilson_low": wl,
                "image_wilson_high": wh,
                "n_lesion_slices": n_i,
                "patient_sensitivity": k_p / n_p if n_p else np.nan,
                "patient_wilson_low": pl,
                "patient_wilson_high": ph,
                "n_lesion_patients": n_p,
            }
        )
    return pd.DataFrame(rows)


def evaluate_mrs(
    y_true,
    proba,
    patient_ids,
    n_boot: int = 2000,
    seed: int = 0,
    class_names=("no stroke", "mRS 0-2", "mRS 3-6"),
) -> Evaluation:
    """Evaluate the 3-class mRS model: accuracy, per-class sensitivity (recall), NLL.

    The per-class rows are the paper's Table 3 "Accuracy <class>" (correct among slices
    of that true class).

    Patient level (the clinical question: what does the model say about this patient?):
    a patient's true class is 0 without a lesion slice, else the class of their lesion
    slices. The model's call uses its own output only: "no stroke" when no slice is
    predicted as a lesion class; otherwise mRS 3-6 when the mean of
    ``P(3-6) / (P(0-2) + P(3-6))`` over the slices it predicts as lesion exceeds 0.5,
    else mRS 0-2. The patient AUC of mRS 3-6 vs 0-2 scores each lesion patient by that
    mean over their lesion slices (the reader's), as the image-level AUC does per slice.
    """
    y, p, pid = _validate(y_true, proba, patient_ids)
    K = p.shape[1]
    rows = _class_rows(y, p.argmax(axis=1), pid, class_names, n_boot, seed)
    pp = np.clip(p, 1e-15, 1.0)
    rows.append(_scalar("nll", log_loss(y, pp / pp.sum(1, keepdims=True), labels=range(K)), len(y)))
    # Lesion slices only: does the model tell the two outcome groups apart?
    les = y > 0
    if les.any() and len(np.unique(y[les])) == 2:
        score = outcome_score(p[les])
        rows.append(_scalar("auc_mrs_3_6_vs_0_2", roc_auc_score(y[les] == 2, score), les.sum()))
    patient = _mrs_patient_table(y, p, pid, class_names, n_boot, seed)
    return Evaluation(pd.DataFrame(rows), patient=patient, classes=list(class_names))


def outcome_score(p: np.ndarray) -> np.ndarray:
    """``P(mRS 3-6) / (P(mRS 0-2) + P(mRS 3-6))`` per row of 3-class probabilities: the
    model's odds of poor outcome given a lesion class, what its outcome AUCs rank by."""
    p = np.asarray(p, dtype=np.float64)
    return p[:, 2] / np.clip(p[:, 1] + p[:, 2], 1e-15, None)


def _class_rows(y, pred, units, class_names, n_boot, seed) -> list[dict]:
    """Accuracy and per-class sensitivity rows (``units``: the bootstrap's clusters)."""
    correct = pred == y
    rows = [_row("accuracy", correct.sum(), len(y), units, n_boot, seed, correct, np.ones_like(y))]
    for k, name in enumerate(class_names):
        m = y == k
        rows.append(
            _row(f"sensitivity {name}", (correct & m).sum(), m.sum(), units, n_boot, seed,
                 correct & m, m)
        )  # fmt: skip
    return rows


def _mrs_patient_table(y, p, pid, class_names, n_boot, seed) -> pd.DataFrame:
    odds = outcome_score(p)  # P(3-6 | a lesion class)
    pred = p.argmax(axis=1)
    df = pd.DataFrame({"pid": pid, "y": y, "lesion": y > 0, "called": pred > 0, "odds": odds})
    df["odds_called"] = df["odds"].where(df["called"])
    df["odds_lesion"] = df["odds"].where(df["lesion"])
    g = df.groupby("pid", sort=True)
    per = pd.DataFrame({
        "y": g["y"].max(),  # all lesion slices of a patient share one outcome class
        "called": g["called"].any(),
        "score_called": g["odds_called"].mean(),
        "score_lesion": g["odds_lesion"].mean(),
    })  # fmt: skip
    call = np.where(~per["called"], 0, np.where(per["score_called"] > 0.5, 2, 1))
    yp = per["y"].to_numpy()
    rows = _class_rows(yp, call, per.index.to_numpy(), class_names, n_boot, seed)
    les = yp > 0
    auc = np.nan
    if les.any() and len(np.unique(yp[les])) == 2:
        auc = roc_auc_score(yp[les] == 2, per["score_lesion"].to_numpy()[les])
    rows.append(_scalar("auc_mrs_3_6_vs_0_2", auc, int(les.sum())))
    return pd.DataFrame(rows)


def evaluate(task: str, y_true, proba, patient_ids, **kw) -> Evaluation:
    """:func:`evaluate_stroke` or :func:`evaluate_mrs` by ``task``."""
    if task == "stroke":
        return evaluate_stroke(y_true, proba, patient_ids, **kw)
    if task == "mrs":
        kw.pop("lesion_volume_ml", None)
        return evaluate_mrs(y_true, proba, patient_ids, **kw)
    raise ValueError(f"unknown task {task!r}; expected 'stroke' or 'mrs'")


# --------------------------------------------------------------------------- tables


def _fmt_ci(est, lo, hi) -> str:
    return f"{est:.4f} [{lo:.4f} {hi:.4f}]"


def _pretty(t: pd.DataFrame) -> pd.DataFrame:
    out = []
    for _, r in t.iterrows():
        if np.isnan(r["wilson_low"]):
            out.append({"metric": r["metric"], "estimate": f"{r['estimate']:.4f}", "n": r["n"]})
        else:
            out.append(
                {
                    "metric": r["metric"],
                    "estimate [Wilson 95% CI]": _fmt_ci(
                        r["estimate"], r["wilson_low"], r["wilson_high"]
                    ),
                    "patient-bootstrap 95% CI": f"[{r['boot_low']:.4f} {r['boot_high']:.4f}]",
                    "n": f"{r['k']}/{r['n']}",
                }
            )
    return pd.DataFrame(out).fillna("")


def table2(evaluations: dict) -> pd.DataFrame:
    """Paper's Table 2: one row per architecture (image level, Wilson CIs).

    ``evaluations`` maps an architecture label to its stroke-model :class:`Evaluation`.
    """
    rows = []
    for name, ev in evaluations.items():
        t = ev.image.set_index("metric")
        row = {"Architecture": name}
        for m, col in (("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"),
                       ("specificity", "Specificity")):  # fmt: skip
            r = t.loc[m]
            row[f"{col} [95% Conf.]"] = _fmt_ci(r["estimate"], r["wilson_low"], r["wilson_high"])
        row["AUC"] = f"{t.loc['auc', 'estimate']:.4f}"
        row["AUC (hard, as the paper)"] = f"{t.loc['balanced_accuracy', 'estimate']:.4f}"
        row["Negative Log-Likelihood"] = f"{t.loc['nll', 'estimate']:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)


def table3(ev: Evaluation) -> pd.DataFrame:
    """Paper's Table 3: the mRS model's metrics on the test set."""
    rows = []
    for _, r in ev.image.iterrows():
        m = r["metric"]
        if m == "accuracy":
            label = "Accuracy [95% Conf.]"
        elif m.startswith("sensitivity "):
            label = f'Accuracy "{m[len("sensitivity ") :]}" [95% Conf.]'
        elif m == "nll":
            label = "Negative Log-Likelihood"
        else:
            label = m
        val = (
            f"{r['estimate']:.4f}"
            if np.isnan(r["wilson_low"])
            else _fmt_ci(r["estimate"], r["wilson_low"], r["wilson_high"])
        )
        rows.append({"Metric": label, "Performance on Testset": val})
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame) -> str:
    """An evaluation table in Markdown, floats to 4 decimals (:func:`hypo._util.markdown_table`)."""
    return _markdown_table(df, float_format=".4f") + "\n"
