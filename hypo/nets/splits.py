"""Patient-level train / validation / test splits.

The paper's code split slices, so slices of one patient sat in both train and test and
the reported accuracy was optimistic. Here whole patients are assigned, stratified by
group (stroke / TIA) and, for the mRS model, by the binarised 3-month mRS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from hypo.nets.labels import mrs_group


@dataclass(frozen=True)
class PatientSplit:
    """Sorted patient ids of each part, with the seed and strata that made them."""

    train: tuple
    val: tuple
    test: tuple
    seed: int
    stratified_by: tuple

    def part_of(self, patient_ids) -> np.ndarray:
        """``"train"``/``"val"``/``"test"`` per patient id (``""`` for patients in none)."""
        lookup = {p: "train" for p in self.train}
        lookup.update({p: "val" for p in self.val})
        lookup.update({p: "test" for p in self.test})
        return np.array([lookup.get(str(p), "") for p in patient_ids], dtype=object)

    def indices(self, patient_ids) -> dict:
        """Row positions of each part in an array of per-slice ``patient_ids``."""
        part = self.part_of(patient_ids)
        return {k: np.flatnonzero(part == k) for k in ("train", "val", "test")}

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> PatientSplit:
        return cls(
            train=tuple(d["train"]),
            val=tuple(d["val"]),
            test=tuple(d["test"]),
            seed=int(d["seed"]),
            stratified_by=tuple(d.get("stratified_by", ())),
        )


def patient_strata(table: pd.DataFrame, by=("group",)) -> pd.Series:
    """One stratum label per patient from per-slice columns ``by`` (``"mrs_group"`` allowed).

    Raises if a patient has more than one value of a stratifying column.
    """
    if "participant_id" not in table.columns:
        raise ValueError("patient split: the table lacks column 'participant_id'")
    df = pd.DataFrame({"participant_id": table["participant_id"].astype(str).to_numpy()})
    for col in by:
        if col == "mrs_group":
            if "mrs_3months" not in table.columns:
                raise ValueError("patient split by mRS group: the table lacks 'mrs_3months'")
            df[col] = mrs_group(table["mrs_3months"])
        elif col in table.columns:
            df[col] = table[col].astype(str).to_numpy()
        else:
            raise ValueError(
                f"patient split: stratifying column {col!r} is not in the table "
                f"(columns: {list(table.columns)})"
            )
    per = df.groupby("participant_id", sort=True).nunique()
    for col in by:
        bad = per.index[per[col] > 1].tolist() if len(by) else []
        if bad:
            raise ValueError(
                f"patient split: column {col!r} varies within patient(s) {bad[:5]}; "
                "a stratifying column must be constant per patient"
            )
    first = df.groupby("participant_id", sort=True).first()
    if not by:
        return pd.Series("all", index=first.index)
    return first[list(by)].astype(str).agg("|".join, axis=1)


def _split(ids: np.ndarray, strata: np.ndarray, size: float, seed: int):
    """Stratified if every stratum can give at least one patient to each side."""
    n_test = int(np.ceil(size * len(ids))) if size < 1 else int(size)
    _, counts = np.unique(strata, return_counts=True)
    ok = counts.min() >= 2 and n_test >= len(counts) and len(ids) - n_test >= len(counts)
    return train_test_split(
        ids, test_size=n_test, random_state=seed, stratify=strata if ok else None
    )


def patient_split(
    table: pd.DataFrame,
    val_size: float = 0.15,
    test_size: float = 0.15,
    seed: int = 0,
    stratify=("group",),
) -> PatientSplit:
    """Split patients into train / validation / test, stratified, seeded.

    Parameters
    ----------
    table : pandas.DataFrame
        Per-slice (or per-patient) table with ``participant_id`` and the ``stratify``
        columns (``"mrs_group"`` is derived from ``mrs_3months``).
    val_size, test_size : float
        Fractions of all patients (paper's original code: slice-level 70/15/15).
    seed : int
        Seed of the shuffles; same seed and table -> same split.
    stratify : sequence of str
        Per-patient columns whose joint levels are kept in proportion. A stratum too
        small to be divided falls back to an unstratified draw (recorded as empty
        ``stratified_by`` only if the whole split had to).
    """
    if not (0 < val_size < 1 and 0 < test_size < 1 and val_size + test_size < 1):
        raise ValueError(
            f"patient split: val_size={val_size}, test_size={test_size}; expected fractions "
            "in (0, 1) summing to less than 1"
        )
    strata = patient_strata(table, tuple(stratify))
    ids = strata.index.to_numpy()
    if len(ids) < 3:
        raise ValueError(f"patient split: {len(ids)} patients; need at least 3")
    s = strata.to_numpy()
    rest, test = _split(ids, s, test_size, seed)
    rest_strata = strata.loc[rest].to_numpy()
    n_val = max(1, int(round(val_size * len(ids))))
    train, val = _split(rest, rest_strata, n_val, seed + 1)
    if len(train) == 0:
        raise ValueError("patient split: no patients left for training")
    return PatientSplit(
        train=tuple(sorted(train)),
        val=tuple(sorted(val)),
        test=tuple(sorted(test)),
        seed=int(seed),
        stratified_by=tuple(stratify),
    )
