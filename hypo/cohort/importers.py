"""Importers: turn other people's data into a cohort in the hypo layout.

Each importer builds the whole cohort in a temporary folder next to ``out_dir`` and renames
it into place only when it is complete, so a failed import never leaves a half-written
cohort. Each writes a BIDS ``dataset_description.json`` recording its sources (with file
hashes) and every assumption it made, then validates the result and warns about any
problem it finds (``python -m hypo.cohort validate`` shows them again).

- :func:`import_paper_hdf5`: the paper group's HDF5 of 2D slices + clinical CSV.
- :func:`import_isles2022`: the ISLES 2022 training folder (DWI + lesion masks).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from hypo import __version__
from hypo._util import atomic_path, file_hash, write_json_atomic, write_table_atomic
from hypo.cohort import layout
from hypo.cohort.io import PARTICIPANT_ID_PATTERN
from hypo.cohort.orientation import slices_to_volume

#: HDF5 datasets the paper group's file must hold (``path`` is optional provenance).
PAPER_H5_KEYS = ("X", "Y", "pat", "stroke", "img_id")

#: Spellings of sex in clinical tables, lower-cased, and the BIDS code they mean.
SEX_SPELLINGS = {
    "m": "M",
    "male": "M",
    "man": "M",
    "mann": "M",
    "maennlich": "M",
    "männlich": "M",
    "f": "F",
    "female": "F",
    "woman": "F",
    "w": "F",
    "frau": "F",
    "weiblich": "F",
}

#: Column names of the paper's CSV that hypo spells differently (lower-cased keys).
PAPER_COLUMN_ALIASES = {
    "p_id": "participant_id",
    "mrs_3_months": "mrs_3months",
    "nihss_24": "nihss_24h",
    "nihss_3_months": "nihss_3months",
}


def _paper_pid(p: int) -> str:
    return f"sub-{int(p):04d}"


def import_paper_hdf5(
    h5_path: str | os.PathLike,
    clinical_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    voxel_mm: tuple[float, float, float] = (1.0, 1.0, 6.0),
    *,
    sex_codes: Mapping | None = None,
    superior_first: bool = False,
    overwrite: bool = False,
) -> Path:
    """Import the paper group's HDF5 of axial slices and their clinical CSV.

    Each patient's slices (``pat``), ordered by ``img_id``, are stacked into one uint8
    NIfTI volume. Slices are taken to be in the radiological view (row 0 anterior,
    column 0 the patient's right), which is how the group's JPEG exports were shown, and
    are turned into canonical RAS+ voxels with
    :func:`hypo.cohort.orientation.slices_to_volume`.

    Parameters
    ----------
    h5_path : path-like
        HDF5 with ``X`` (n, rows, cols[, 3]) grey values 0-255 (three equal channels),
        ``Y`` (n,) slice label, 1 = lesion visible, ``pat`` (n,) integer patient id,
        ``stroke`` (n,) patient label, 1 = stroke / 0 = TIA, ``img_id`` (n,) slice order,
        optionally ``path`` (n,) bytes.
    clinical_csv : path-like
        The group's clinical table, keyed by ``p_id`` (the same numbers as ``pat``).
        Columns are lower-cased; ``p_id`` becomes ``participant_id`` (``sub-%04d``) and
        every other column is kept under its own name (``mrs_3months``, ``nihss_baseline``
        ... match hypo's names already). A ``stroke`` or ``group`` column of the CSV is
        replaced by ``group`` from the HDF5's ``stroke``.
    out_dir : path-like
        The cohort folder to create.
    voxel_mm : tuple of 3 float
        Voxel size (column spacing, row spacing, slice spacing) in mm. The HDF5 records
        none; the default (1, 1, 6) mm is an assumption, written to
        dataset_description.json and warned about.
    sex_codes : mapping, optional
        Meaning of numeric sex codes, e.g. ``{0: "F", 1: "M"}``. Text values (m/f, male/
        female, w, männlich/weiblich) are recognised without it. Without it numeric codes
        are kept as numbers (with a warning), because guessing the coding would silently
        swap the sexes if the guess were wrong.
    superior_first : bool
        True if increasing ``img_id`` runs from the top of the head down; default False
        (inferior first, the order of ``slice`` in the hypo layout).
    overwrite : bool
        Replace ``out_dir`` if it exists.

    Returns
    -------
    Path
        ``out_dir``. The cohort holds participants.tsv (``group`` = ``stroke``/``TIA``),
        one uint8 DWI per patient, slice_labels.tsv (``lesion_visible`` from ``Y``, plus
        ``img_id`` and, if present, ``source_path``) and dataset_description.json.
    """
    import h5py  # noqa: I001  (h5py loads here only: `import hypo.cohort` stays light)

    h5_path, clinical_csv, out_dir = Path(h5_path), Path(clinical_csv), Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    voxel = tuple(float(v) for v in voxel_mm)
    if len(voxel) != 3 or not all(v > 0 for v in voxel):
        raise ValueError(f"voxel_mm = {voxel_mm}; expected three positive sizes in mm")
    clinical = _read_paper_csv(clinical_csv, sex_codes)

    with h5py.File(h5_path, "r") as h5:
        X, meta = _paper_h5_arrays(h5, h5_path)
        pats = meta["pat"].astype(np.int64)
        warnings.warn(
            f"{h5_path}: the HDF5 records no voxel size; assuming {voxel} mm "
            "(column, row, slice spacing) and recording it in dataset_description.json",
            stacklevel=2,
        )
        label_rows, patient_rows = [], []
        colour_slices = 0
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            for p in np.unique(pats):
                labels, patient, n_colour = _write_paper_patient(
                    tmp, h5_path, X, meta, np.flatnonzero(pats == p), p, voxel, superior_first
                )
                label_rows += labels
                patient_rows.append(patient)
                colour_slices += n_colour
            if colour_slices:
                warnings.warn(
                    f"{h5_path}: {colour_slices} slices have unequal colour channels; "
                    "converted to grey with the ITU-R BT.601 weights (OpenCV)",
                    stacklevel=2,
                )
            participants = _join_clinical(
                pd.DataFrame(patient_rows), clinical, h5_path, clinical_csv
            )
            write_table_atomic(tmp / layout.PARTICIPANTS, participants)
            write_table_atomic(tmp / layout.SLICE_LABELS, pd.DataFrame(label_rows))
            _write_paper_description(tmp, h5_path, clinical_csv, voxel, superior_first, sex_codes)
            _warn_problems(tmp, out_dir)
    return out_dir


def _paper_h5_arrays(h5, h5_path: Path) -> tuple:
    """``(X, meta)`` of the paper's HDF5, every dataset checked against ``X``."""
    missing = [k for k in PAPER_H5_KEYS if k not in h5]
    if missing:
        raise ValueError(
            f"{h5_path}: dataset(s) {missing} missing; expected {list(PAPER_H5_KEYS)} "
            f"(found {sorted(h5.keys())})"
        )
    X = h5["X"]
    n = X.shape[0]
    if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[3] not in (1, 3)):
        raise ValueError(
            f"{h5_path}: X has shape {X.shape}; expected (n, rows, cols) or (n, rows, cols, 3)"
        )
    meta = {}
    for key in ("Y", "pat", "stroke", "img_id") + (("path",) if "path" in h5 else ()):
        values = np.asarray(h5[key][()])
        values = values.reshape(len(values), -1)[:, 0] if values.ndim > 1 else values
        if len(values) != n:
            raise ValueError(
                f"{h5_path}: {key} has {len(values)} entries; expected one per slice of X ({n})"
            )
        meta[key] = values
    for key in ("Y", "stroke"):
        bad = sorted(set(np.unique(meta[key]).tolist()) - {0, 1})
        if bad:
            raise ValueError(f"{h5_path}: {key} holds {bad[:5]}; expected 0 or 1 only")
    if not np.all(np.equal(np.mod(meta["pat"], 1), 0)) or np.min(meta["pat"]) < 0:
        raise ValueError(f"{h5_path}: pat must hold non-negative integer patient ids")
    return X, meta


def _write_paper_patient(tmp, h5_path, X, meta, rows, p, voxel, superior_first) -> tuple:
    """One patient's slices (``rows``, increasing as h5py requires) as a uint8 NIfTI;
    returns ``(slice label rows, participants row, slices converted from colour)``."""
    pid = _paper_pid(p)
    order = np.lexsort((rows, meta["img_id"][rows]))
    if superior_first:
        order = order[::-1]
    grey, n_colour = _to_grey(np.asarray(X[rows])[order])
    stroke = np.unique(meta["stroke"][rows])
    if len(stroke) != 1:
        raise ValueError(
            f"{h5_path}: patient pat={p} has slices labelled stroke and TIA; "
            "expected one patient label per patient"
        )
    volume = slices_to_volume(grey)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = -(np.asarray(volume.shape) - 1) / 2.0 * np.asarray(voxel)
    img = nib.Nifti1Image(volume, affine)
    img.header.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm")
    path = layout.dwi_path(tmp, pid)
    path.parent.mkdir(parents=True)
    nib.save(img, path)
    text_ids = meta["img_id"].dtype.kind in "SOU"
    labels = []
    for k, r in enumerate(rows[order]):
        row = {
            "participant_id": pid,
            "slice": k,
            "lesion_visible": int(meta["Y"][r]),
            "img_id": _text(meta["img_id"][r]) if text_ids else meta["img_id"][r],
        }
        if "path" in meta:
            row["source_path"] = _text(meta["path"][r])
        labels.append(row)
    patient = {"participant_id": pid, "group": "stroke" if stroke[0] == 1 else "TIA"}
    return labels, patient, n_colour


def _write_paper_description(tmp, h5_path, clinical_csv, voxel, superior_first, sex_codes):
    _write_description(
        tmp,
        name=f"{h5_path.stem} (imported from the paper group's HDF5)",
        generator="hypo.cohort.import_paper_hdf5",
        sources={"hdf5": h5_path, "clinical_csv": clinical_csv},
        assumptions={
            "voxel_mm": list(voxel),
            "voxel_mm_note": "assumed: the HDF5 records no voxel size",
            "slice_view": "radiological (row 0 anterior, column 0 patient's right)",
            "slice_order": "img_id descending = inferior to superior"
            if superior_first
            else "img_id ascending = inferior to superior",
            "participant_id": "sub-%04d of the HDF5 pat / CSV p_id",
            "group": "stroke = 1 -> stroke, 0 -> TIA (HDF5 'stroke')",
            "sex": _sex_note(sex_codes),
        },
    )


def _read_paper_csv(path: Path, sex_codes: Mapping | None) -> pd.DataFrame:
    df = pd.read_csv(path)
    df.columns = [str(c).strip().lower() for c in df.columns]
    df = df.rename(columns=PAPER_COLUMN_ALIASES)
    df = df.loc[:, ~df.columns.str.startswith("unnamed:")]
    if "participant_id" not in df.columns:
        raise ValueError(f"{path}: no p_id column; expected the patient id column 'p_id'")
    ids = pd.to_numeric(df["participant_id"], errors="coerce")
    if ids.isna().any() or (ids % 1 != 0).any():
        bad = df.loc[ids.isna() | (ids % 1 != 0), "participant_id"].tolist()[:5]
        raise ValueError(f"{path}: p_id values {bad} are not integers; expected integer ids")
    df["participant_id"] = [_paper_pid(i) for i in ids.astype(np.int64)]
    dup = df["participant_id"][df["participant_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: p_id {dup[:5]} appear more than once; expected each once")
    df = df.drop(columns=[c for c in ("stroke", "group") if c in df.columns])
    if "sex" in df.columns:
        df["sex"] = _code_sex(df["sex"], sex_codes, path)
    return df


def _code_sex(values: pd.Series, sex_codes: Mapping | None, path: Path) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    if values.notna().sum() and numeric.notna().sum() == values.notna().sum():
        if sex_codes is None:
            warnings.warn(
                f"{path}: sex is coded as numbers {sorted(numeric.dropna().unique().tolist())}; "
                "kept as is. Pass sex_codes (e.g. {0: 'F', 1: 'M'}) to record M/F.",
                stacklevel=3,
            )
            return numeric
        lookup = {_code_key(k): v for k, v in sex_codes.items()}
        out = numeric.map(lambda v: np.nan if pd.isna(v) else lookup.get(_code_key(v), "?"))
        unknown = sorted(numeric[out == "?"].unique().tolist())
        if unknown:
            raise ValueError(f"{path}: sex codes {unknown} are not in sex_codes {dict(sex_codes)}")
        return out
    lower = values.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    out = lower.map(lambda v: SEX_SPELLINGS.get(v, "?") if isinstance(v, str) else np.nan)
    unknown = sorted(values[out == "?"].unique().tolist())
    if unknown:
        raise ValueError(
            f"{path}: sex values {unknown} not understood; expected M/F, male/female, "
            "m/w, männlich/weiblich or numeric codes with sex_codes"
        )
    return out


def _code_key(v) -> str:
    f = float(v)
    return str(int(f)) if f == int(f) else str(f)


def _sex_note(sex_codes: Mapping | None) -> str:
    if sex_codes:
        return "numeric codes mapped: " + ", ".join(f"{k} -> {v}" for k, v in sex_codes.items())
    return "text values mapped to M/F; numeric codes, if any, kept as they were"


def _to_grey(block: np.ndarray) -> tuple[np.ndarray, int]:
    """(n, rows, cols[, c]) -> uint8 (n, rows, cols); also the number of colour slices."""
    import cv2

    block = np.asarray(block)
    if block.ndim == 4 and block.shape[3] == 1:
        block = block[..., 0]
    if block.ndim == 3:
        return np.clip(np.rint(block), 0, 255).astype(np.uint8), 0
    block = np.clip(np.rint(block), 0, 255).astype(np.uint8)
    equal = np.all(block == block[..., :1], axis=(1, 2, 3))
    grey = block[..., 0].copy()
    for i in np.flatnonzero(~equal):
        grey[i] = cv2.cvtColor(block[i], cv2.COLOR_RGB2GRAY)
    return grey, int((~equal).sum())


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes | np.bytes_) else str(v)


def _join_clinical(
    patients: pd.DataFrame, clinical: pd.DataFrame, h5_path: Path, csv_path: Path
) -> pd.DataFrame:
    no_row = sorted(set(patients["participant_id"]) - set(clinical["participant_id"]))
    no_images = sorted(set(clinical["participant_id"]) - set(patients["participant_id"]))
    if no_row:
        warnings.warn(
            f"{csv_path}: {len(no_row)} patient(s) of {h5_path.name} have no clinical row "
            f"(e.g. {no_row[:3]}); their clinical columns are n/a",
            stacklevel=3,
        )
    if no_images:
        warnings.warn(
            f"{csv_path}: {len(no_images)} clinical row(s) have no slices in {h5_path.name} "
            f"(e.g. {no_images[:3]}); left out",
            stacklevel=3,
        )
    df = patients.merge(clinical, on="participant_id", how="left")
    first = ["participant_id"] + [c for c in layout.CLINICAL_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


# --------------------------------------------------------------------------- ISLES 2022


def import_isles2022(
    root: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Import an ISLES 2022 training folder (DWI and lesion masks; no outcomes).

    Parameters
    ----------
    root : path-like
        Folder holding ``rawdata/sub-*/ses-*/dwi/sub-*_ses-*_dwi.nii.gz`` and
        ``derivatives/sub-*/ses-*/sub-*_ses-*_msk.nii.gz``.
    out_dir : path-like
        The cohort folder to create.
    overwrite : bool
        Replace ``out_dir`` if it exists.

    Returns
    -------
    Path
        ``out_dir``: participants.tsv with ``participant_id``, ``group`` = ``stroke`` (every
        ISLES case is a stroke) and ``mrs_3months`` = n/a; files are copied byte for byte
        (orientation handled at load time); masks become lesion masks. A subject with
        several sessions keeps the first (with a warning); a missing mask is warned about.
    """
    root, out_dir = Path(root), Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    pattern = "rawdata/sub-*/ses-*/dwi/sub-*_ses-*_dwi.nii.gz"
    found = sorted(root.glob(pattern))
    if not found:
        raise FileNotFoundError(f"{root}: no DWI files matching {pattern}; is this ISLES 2022?")
    by_subject: dict[str, list[Path]] = {}
    for path in found:
        by_subject.setdefault(path.parents[2].name, []).append(path)
    rows, no_mask = [], []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for sub, paths in sorted(by_subject.items()):
            if not PARTICIPANT_ID_PATTERN.match(sub):
                raise ValueError(f"{paths[0]}: subject {sub!r} is not a BIDS id (sub-<alnum>)")
            if len(paths) > 1:
                warnings.warn(
                    f"{root / 'rawdata' / sub}: {len(paths)} sessions; importing "
                    f"{paths[0].parents[1].name} only",
                    stacklevel=2,
                )
            dwi = paths[0]
            ses = dwi.parents[1].name
            dest = layout.dwi_path(tmp, sub)
            dest.parent.mkdir(parents=True)
            shutil.copyfile(dwi, dest)
            mask = root / "derivatives" / sub / ses / f"{sub}_{ses}_msk.nii.gz"
            if mask.is_file():
                mdest = layout.lesion_mask_path(tmp, sub)
                mdest.parent.mkdir(parents=True)
                shutil.copyfile(mask, mdest)
            else:
                no_mask.append(sub)
            rows.append({"participant_id": sub, "group": "stroke", "mrs_3months": np.nan})
        if no_mask:
            warnings.warn(
                f"{root}: {len(no_mask)} subject(s) have no lesion mask (e.g. {no_mask[:3]})",
                stacklevel=2,
            )
        write_table_atomic(tmp / layout.PARTICIPANTS, pd.DataFrame(rows))
        _write_description(
            tmp,
            name=f"ISLES 2022 ({root.name})",
            generator="hypo.cohort.import_isles2022",
            sources={"root": root},
            assumptions={
                "group": "every ISLES 2022 case is an acute stroke",
                "mrs_3months": "not available in ISLES 2022 (n/a)",
                "images": "DWI (b = 1000) copied unchanged; masks from derivatives/*_msk",
            },
            hash_sources=False,
        )
        _warn_problems(tmp, out_dir)
    return out_dir


# --------------------------------------------------------------------------- shared


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; choose a new folder or pass overwrite=True")


def _write_description(tmp: Path, *, name, generator, sources, assumptions, hash_sources=True):
    source_info = {
        key: {"path": str(p), **({"sha256_16": file_hash(p)} if hash_sources else {})}
        for key, p in sources.items()
    }
    write_json_atomic(
        tmp / "dataset_description.json",
        {
            "Name": name,
            "BIDSVersion": "1.8.0",
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": generator, "Version": __version__}],
            "HypoImport": {"sources": source_info, "assumptions": assumptions},
        },
    )


def _warn_problems(tmp: Path, out_dir: Path) -> None:
    from hypo.cohort.validation import validate

    problems = validate(tmp)
    if problems:
        lines = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        warnings.warn(
            f"{out_dir}: the imported cohort has {len(problems)} problem(s); "
            f"load it with skip_invalid=True or fix the source:\n{lines}{more}",
            stacklevel=3,
        )
