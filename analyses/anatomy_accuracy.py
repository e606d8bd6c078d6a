"""Image-derived anatomy against the synthetic ground truth.

    python -m analyses.anatomy_accuracy [--cohort DIR] [--quick] [--size 192] [--out DIR]
                                        [--seed 1] [--contrast b1000|b0|adc]

Generates (or reuses) a small synthetic cohort, builds its slice store, computes the
image-derived anatomy (:mod:`hypo.features.anatomy`, which never sees the truth) and
compares it with the truth masks carried through the same preprocessing:

* lesion Dice (3D, per patient) for lesions >= 1 mL (target >= 0.8);
* ventricle Dice (3D, per patient; target >= 0.8);
* midline error in pixels at the store's size (target <= 2 px at 192 x 192): per slice,
  the mean over rows of |estimated line column - truth boundary column|, the truth
  boundary being where the truth hemisphere mask changes from right (2) to left (1);
* lesion volume error for lesions >= 5 mL (target within 20 %), against the truth table's
  volume and against the truth mask as resampled into the store;
* brain Dice (per patient; target >= 0.95) and hemisphere agreement (share of the pixels
  both call brain given the truth's hemisphere; target >= 0.99); the midline error also
  in mm.

``--contrast b0|adc`` generates the same patients in another contrast (the infarct is not
sought there: lesion numbers are NaN).

Each number is given twice: against the truth masks as the slice store carries them, and
against the truth resampled here with centre-aligned nearest neighbour
(``cv2.INTER_NEAREST_EXACT``). Since slice store version 2 the store resizes its masks the
same way, so the two agree; the second set guards against a store whose masks are shifted
against their image (``cv2.INTER_NEAREST`` shifted an upsampled mask by about half an
output pixel). Lesion numbers are also printed per truth-volume bin.

The ventricle truth is the lateral and third ventricles (the generator's central CSF above
the temporal horns); the image-derived ventricles are sought on the same levels (see
``AnatomyConfig.ventricle_min_rel_area``).

Tune on one ``--seed``, report on another: the defaults of
:class:`hypo.features.anatomy.AnatomyConfig` were set on seed 1.

Writes ``anatomy_accuracy.csv`` (per patient), ``midline_per_slice.csv``,
``lesion_by_volume.csv`` and ``summary.json`` under ``--out`` (default
``reports/anatomy_accuracy``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import write_json_atomic, write_table_atomic


def truth_boundary(hemi: np.ndarray) -> np.ndarray:
    """Per row, the column of the right(2)/left(1) boundary of a truth hemisphere slice
    (NaN where a row lacks either side)."""
    H, W = hemi.shape
    cols = np.arange(W)
    out = np.full(H, np.nan)
    for r in range(H):
        right = cols[hemi[r] == 2]
        left = cols[hemi[r] == 1]
        if right.size and left.size:
            out[r] = 0.5 * (right.max() + 0.5 + left.min() - 0.5)
    return out


def centred_truth(cohort, store, label: str) -> np.ndarray:
    """Truth mask ``label`` of every store slice, cropped as the image was and resized with
    centre-aligned nearest neighbour (uint8, shape of ``store.images``)."""
    import cv2

    from hypo.cohort.orientation import axial_slices

    tab = store.table
    out = np.zeros(store.images.shape, np.uint8)
    pids = tab["participant_id"].astype(str).to_numpy()
    for pid in pd.unique(pids):
        m = cohort.truth_mask(pid, label)
        if m is None:
            raise SystemExit(f"{cohort.root}: patient {pid} has no truth mask {label!r}")
        sl = axial_slices(np.asarray(m))
        for i in np.flatnonzero(pids == pid):
            row = tab.iloc[i]
            crop = sl[int(row["slice"])][
                int(row["crop_r0"]) : int(row["crop_r1"]), int(row["crop_c0"]) : int(row["crop_c1"])
            ]
            out[i] = cv2.resize(
                np.ascontiguousarray(crop, dtype=np.uint8),
                (int(row["out_cols"]), int(row["out_rows"])),
                interpolation=cv2.INTER_NEAREST_EXACT,
            )
    return out


def midline_errors(anatomy, store, hemi=None) -> pd.DataFrame:
    t = anatomy.table
    hemi = store.masks["truth_hemisphere"] if hemi is None else hemi
    H = hemi.shape[1]
    yc = (H - 1) / 2.0
    rows = np.arange(H)
    recs = []
    for i in range(len(t)):
        ang = t["midline_angle_deg"].iat[i]
        if not np.isfinite(ang):
            continue
        tb = truth_boundary(np.asarray(hemi[i]))
        ok = np.isfinite(tb)
        if ok.sum() < 10:
            continue
        pr, pc = t["pixel_mm_row"].iat[i], t["pixel_mm_col"].iat[i]
        slope = math.tan(math.radians(ang)) * pr / pc  # columns per row
        est = t["midline_col_px"].iat[i] + slope * (rows - yc)
        recs.append(
            {
                "store_index": i,
                "participant_id": store.table["participant_id"].iat[i],
                "slice": store.table["slice"].iat[i],
                "rows": int(ok.sum()),
                "midline_error_px": float(np.mean(np.abs(est[ok] - tb[ok]))),
                "midline_error_mm": float(np.mean(np.abs(est[ok] - tb[ok]))) * float(pc),
                # + when the estimate lies towards higher columns (the patient's left).
                "midline_signed_px": float(np.median(est[ok] - tb[ok])),
                "midline_angle_deg": ang,
            }
        )
    return pd.DataFrame(recs)


def per_patient(anatomy, store, truth: pd.DataFrame, masks=None) -> pd.DataFrame:
    tab = store.table
    masks = store.masks if masks is None else masks
    pids = tab["participant_id"].astype(str).to_numpy()
    area = (tab["pixel_mm_row"] * tab["pixel_mm_col"]).to_numpy()
    thick = tab["slice_thickness_mm"].to_numpy()
    recs = []
    for pid in pd.unique(pids):
        idx = np.flatnonzero(pids == pid)
        lab = np.asarray(anatomy.labels[idx])
        les = (lab & 32) > 0
        ven = (lab & 8) > 0
        tl = np.asarray(masks["truth_lesion"][idx]) > 0
        tv = np.asarray(masks["truth_ventricles"][idx]) > 0
        tb = np.asarray(masks["truth_brain"][idx]) > 0 if "truth_brain" in masks else None
        th = np.asarray(masks["truth_hemisphere"][idx])
        hemi = np.where((lab & 2) > 0, 1, np.where((lab & 4) > 0, 2, 0))
        both = (th > 0) & ((lab & 1) > 0)
        vox = (area[idx] * thick[idx])[:, None, None] / 1000.0

        def dice(a, b):
            s = a.sum() + b.sum()
            return 2 * (a & b).sum() / s if s else np.nan

        # Not sought (b0, ADC: the table says NaN): no lesion numbers rather than zeros.
        sought = bool(np.isfinite(anatomy.table["lesion_image_area_mm2"].to_numpy()[idx]).any())
        recs.append(
            {
                "participant_id": pid,
                "lesion_dice": dice(les, tl) if sought else np.nan,
                "ventricle_dice": dice(ven, tv),
                "brain_dice": dice((lab & 1) > 0, tb) if tb is not None else np.nan,
                # Share of the brain pixels given the truth's hemisphere
                # (over the pixels both call brain: the brain mask has its own number).
                "hemisphere_agreement": float((hemi[both] == th[both]).mean())
                if both.any()
                else np.nan,
                "lesion_image_ml": float((les * vox).sum()) if sought else np.nan,
                "lesion_truthmask_ml": float((tl * vox).sum()),
                "lesion_truth_ml": float(truth.loc[pid, "lesion_volume_ml"]),
                "side": truth.loc[pid, "side"] if "side" in truth else None,
            }
        )
    return pd.DataFrame(recs)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", type=Path, help="synthetic cohort folder (default: generate)")
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="8 patients at 128 px")
    ap.add_argument(
        "--contrast",
        choices=("b1000", "b0", "adc"),
        default="b1000",
        help="contrast of the generated cohort (the same patients and truth in each)",
    )
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--out", type=Path, default=Path("reports/anatomy_accuracy"))
    args = ap.parse_args(argv)

    import hypo.cohort as hc
    from hypo.features.anatomy import AnatomyConfig, anatomy_for_store
    from hypo.preprocess import PreprocessConfig, build_slice_store

    if args.quick:
        args.patients, args.size = 8, 128
    cohort_dir = args.cohort
    if cohort_dir is None:
        from hypo.cohort.synthetic import generate_cohort
        from hypo.paths import cache_dir

        tag = "" if args.contrast == "b1000" else f"-{args.contrast}"
        cohort_dir = cache_dir() / "anatomy_accuracy" / f"syn{args.patients}-s{args.seed}{tag}"
        generate_cohort(cohort_dir, args.patients, seed=args.seed, workers=2, progress=False,
                        contrast=args.contrast)  # fmt: skip
    cohort = hc.load(cohort_dir)
    truth = cohort.truth()
    if truth is None or not cohort.is_synthetic:
        raise SystemExit(f"{cohort_dir}: not a synthetic cohort with derivatives/truth/truth.tsv")
    store = build_slice_store(cohort, PreprocessConfig(size=args.size), progress=False)
    for m in ("truth_lesion", "truth_ventricles", "truth_hemisphere", "truth_brain"):
        if m not in store.masks:
            raise SystemExit(f"slice store {store.path} lacks the {m} mask")
    anatomy = anatomy_for_store(store, progress=False, cohort=cohort)
    centred = {m: centred_truth(cohort, store, m.removeprefix("truth_")) for m in TRUTHS}
    out = {"store_masks": {}, "centred_truth": {}}
    tables = {}
    for name, masks in (("store_masks", store.masks), ("centred_truth", centred)):
        pp = per_patient(anatomy, store, truth, masks)
        ml = midline_errors(anatomy, store, masks["truth_hemisphere"])
        out[name] = _summary(pp, ml, args.size)
        tables[name] = (pp, ml)
    summary = {
        "cohort": str(cohort_dir),
        "cohort_id": cohort.cohort_id,
        "synthetic": True,
        "seed": args.seed if args.cohort is None else None,
        "contrast": args.contrast if args.cohort is None else None,
        "size_px": args.size,
        "n_patients": int(len(tables["store_masks"][0])),
        "n_slices": int(len(store)),
        "anatomy_config_key": AnatomyConfig().key(),
        **out,
    }
    pp = tables["store_masks"][0].merge(
        tables["centred_truth"][0][["participant_id", "lesion_dice", "ventricle_dice"]],
        on="participant_id",
        suffixes=("", "_centred"),
    )
    ml = tables["store_masks"][1].merge(
        tables["centred_truth"][1][["store_index", "midline_error_px", "midline_signed_px"]],
        on="store_index",
        suffixes=("", "_centred"),
    )
    bins = pd.concat(
        [lesion_by_volume(tables[k][0]).assign(truth=k) for k in ("store_masks", "centred_truth")],
        ignore_index=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_table_atomic(args.out / "anatomy_accuracy.csv", pp)
    write_table_atomic(args.out / "midline_per_slice.csv", ml)
    write_table_atomic(args.out / "lesion_by_volume.csv", bins)
    write_json_atomic(args.out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    print("\nLesions by truth volume (Dice median; volume error median |rel|; share within 20 %):")
    print(bins.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return summary


TRUTHS = ("truth_lesion", "truth_ventricles", "truth_hemisphere", "truth_brain")
VOLUME_BINS_ML = (0.0, 1.0, 5.0, 20.0, 50.0, np.inf)


def lesion_by_volume(pp: pd.DataFrame) -> pd.DataFrame:
    """Lesion Dice and volume error per truth-volume bin (patients with a true lesion)."""
    les = pp[pp["lesion_truth_ml"] > 0].copy()
    les["bin_ml"] = pd.cut(les["lesion_truth_ml"], VOLUME_BINS_ML, right=False).astype(str)
    rel = (les["lesion_image_ml"] - les["lesion_truth_ml"]) / les["lesion_truth_ml"]
    les["rel"] = rel
    g = les.groupby("bin_ml", sort=False)
    out = pd.DataFrame(
        {
            "n": g.size(),
            "lesion_dice_median": g["lesion_dice"].median(),
            "volume_rel_error_median_abs": g["rel"].apply(lambda v: v.abs().median()),
            "volume_rel_error_median_signed": g["rel"].median(),
            "share_within_20pct": g["rel"].apply(lambda v: (v.abs() <= 0.2).mean()),
        }
    ).reset_index()
    order = {
        str(pd.Interval(a, b, closed="left")): k
        for k, (a, b) in enumerate(zip(VOLUME_BINS_ML[:-1], VOLUME_BINS_ML[1:]))
    }
    return out.sort_values("bin_ml", key=lambda c: c.map(order)).reset_index(drop=True)


def _summary(pp: pd.DataFrame, ml: pd.DataFrame, size: int) -> dict:
    les1 = pp[pp["lesion_truth_ml"] >= 1.0]
    les5 = pp[pp["lesion_truth_ml"] >= 5.0]
    rel = (les5["lesion_image_ml"] - les5["lesion_truth_ml"]) / les5["lesion_truth_ml"]
    rel_mask = (les5["lesion_image_ml"] - les5["lesion_truthmask_ml"]) / les5["lesion_truthmask_ml"]
    # Large slices only for the second midline number: the midline of a skull-base or
    # vertex slice is barely defined (and the truth boundary there is short).
    big = ml["rows"] >= 0.4 * size
    return {
        "lesion_dice_ge1ml": {
            "n": int(len(les1)),
            "median": float(les1["lesion_dice"].median()),
            "mean": float(les1["lesion_dice"].mean()),
            "target": 0.8,
        },
        "brain_dice": {
            "median": float(pp["brain_dice"].median()),
            "min": float(pp["brain_dice"].min()),
            "target": 0.95,
        },
        "hemisphere_agreement": {
            "median": float(pp["hemisphere_agreement"].median()),
            "min": float(pp["hemisphere_agreement"].min()),
            "target": 0.99,
        },
        "ventricle_dice": {
            "n": int(pp["ventricle_dice"].notna().sum()),
            "median": float(pp["ventricle_dice"].median()),
            "mean": float(pp["ventricle_dice"].mean()),
            "target": 0.8,
        },
        "midline_error_px": {
            "n_slices": int(len(ml)),
            "median_all": float(ml["midline_error_px"].median()),
            "mean_all": float(ml["midline_error_px"].mean()),
            "p90_all": float(ml["midline_error_px"].quantile(0.9)),
            "median_signed_all": float(ml["midline_signed_px"].median()),
            "n_large_slices": int(big.sum()),
            "median_large": float(ml.loc[big, "midline_error_px"].median()),
            "mean_large": float(ml.loc[big, "midline_error_px"].mean()),
            "p90_large": float(ml.loc[big, "midline_error_px"].quantile(0.9)),
            "median_all_mm": float(ml["midline_error_mm"].median()),
            "mean_all_mm": float(ml["midline_error_mm"].mean()),
            "target": 2.0,
        },
        "lesion_volume_rel_error_ge5ml": {
            "n": int(len(les5)),
            "median_abs_vs_truth_table": float(rel.abs().median()),
            "median_signed_vs_truth_table": float(rel.median()),
            "share_within_20pct": float((rel.abs() <= 0.2).mean()) if len(rel) else math.nan,
            "median_abs_vs_resampled_truth_mask": float(rel_mask.abs().median()),
            "target": 0.2,
        },
    }


if __name__ == "__main__":
    main()
