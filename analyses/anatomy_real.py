"""hypo's 3D brain mask on the real head volumes that ship inside installed wheels, against
nilearn's ``compute_epi_mask``.

    python -m analyses.anatomy_real [--out reports/anatomy_real]

No download: the volumes are test data of dipy (the dev extra) and nibabel. Two of them
are used by the test suite (``S0_10slices``, a b0 DWI slab, and ``example4d``, an EPI
run: the tuned ones); the others are kept for acceptance, never tuned on (issue 18). For
each volume: shape, voxel size, whether the reference finds a brain, and
:func:`hypo.features.brain3d.mask_agreement` -- our brain volume over the reference's on
the slices where it finds one (target within 10 %), the Dice of each slice holding >= 25 %
of the reference's largest slice (target >= 0.85), and whether ours has brain on every
slice. Volumes that hold no head (a reference mask covering less than 3 slices) or whose
field of view lies inside the head (most of the slices' border in our mask: no air, so no
brain outline) are listed and not scored.

Writes ``anatomy_real.csv`` (one row per volume) and ``slice_dice.csv`` under ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import write_table_atomic
from hypo.paths import REPO_ROOT

#: (package, path inside it, name, role): the volumes the tests use are "test", the rest
#: "acceptance".
CANDIDATES = (
    ("dipy", "data/files/S0_10slices.nii.gz", "S0_10slices", "test"),
    ("nibabel", "tests/data/example4d.nii.gz", "example4d", "test"),
    ("dipy", "data/files/aniso_vox.nii.gz", "aniso_vox", "acceptance"),
    ("dipy", "data/files/small_64D.nii", "small_64D", "acceptance"),
    ("dipy", "data/files/small_101D.nii.gz", "small_101D", "acceptance"),
    ("dipy", "data/files/small_25.nii.gz", "small_25", "acceptance"),
    ("nibabel", "tests/data/anatomical.nii", "anatomical", "acceptance"),
    ("nibabel", "tests/data/functional.nii", "functional", "acceptance"),
)


def _path(package: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    p = Path(spec.origin).parent / rel
    return p if p.is_file() else None


def score_volume(path: Path) -> tuple[dict, dict]:
    """One volume's row and its per-slice Dice."""
    import nibabel as nib
    from nilearn.masking import compute_epi_mask

    from hypo.features.brain3d import (
        brain_mask_3d,
        deshear_affine,
        mask_agreement,
        voxel_sizes,
    )

    img = nib.as_closest_canonical(nib.load(path))
    data = np.asarray(img.dataobj, np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    affine = img.affine
    with warnings.catch_warnings():
        # "Computed an empty mask" on volumes without a head: reported in the table.
        warnings.simplefilter("ignore")
        ref = compute_epi_mask(nib.Nifti1Image(data, affine)).get_fdata() > 0
    row = {
        "shape": "x".join(str(s) for s in data.shape),
        "voxel_mm": "x".join(f"{z:.2f}" for z in voxel_sizes(deshear_affine(affine))),
        "reference_slices": int(ref.any(axis=(0, 1)).sum()),
    }
    if row["reference_slices"] < 3:
        return {**row, "scored": False, "note": "the reference finds no head"}, {}
    ours = brain_mask_3d(data, deshear_affine(affine))
    # A field of view inside the head (no air around it) has no brain outline to find:
    # the reference then splits tissue from CSF, and is no reference for a brain mask.
    frame = np.ones(ours.shape[:2], bool)
    frame[1:-1, 1:-1] = False
    row["border_in_mask"] = round(float(ours[frame].mean()), 3)
    a = mask_agreement(ours, ref)
    inside = row["border_in_mask"] > 0.5
    return {
        **row,
        "scored": not inside,
        "volume_ratio": round(a.volume_ratio, 3),
        "n_slices_scored": len(a.slice_dice),
        "min_slice_dice": round(a.min_slice_dice, 3),
        "median_slice_dice": round(float(np.median(list(a.slice_dice.values()))), 3),
        "brain_on_every_slice": a.brain_on_every_slice,
        "meets_targets": a.meets() if not inside else None,
        "note": "field of view inside the head (no air border): not scored" if inside else "",
    }, a.slice_dice


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "anatomy_real")
    args = ap.parse_args(argv)
    rows, dice = [], []
    for package, rel, name, role in CANDIDATES:
        path = _path(package, rel)
        if path is None:
            rows.append({"volume": name, "role": role, "scored": False,
                         "note": f"{package} not installed or lacks {rel}"})  # fmt: skip
            continue
        row, per_slice = score_volume(path)
        rows.append({"volume": name, "role": role, "source": f"{package}/{rel}", **row})
        dice += [{"volume": name, "slice": k, "dice": round(d, 4)} for k, d in per_slice.items()]
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_table_atomic(args.out / "anatomy_real.csv", table)
    write_table_atomic(args.out / "slice_dice.csv", pd.DataFrame(dice))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["source"], errors="ignore").to_string(index=False))
    print(f"-> {args.out / 'anatomy_real.csv'}")
    return table


if __name__ == "__main__":
    main()
