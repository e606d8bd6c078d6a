"""A montage of cohort slices with lesion outlines and L/R markers.

``python -m hypo.report.montage --cohort DIR --out reports/montage/montage.png``

Each tile is one patient's axial slice in the radiological view (the patient's right on
the image's left, marked ``R``), windowed as hypo loads it, with the lesion mask outlined.
Stroke patients show their slice of largest lesion area; TIA patients a mid-brain slice.
Tiles are captioned by ``participant_id`` only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from hypo._util import atomic_path
from hypo.cohort import load
from hypo.cohort.orientation import axial_slices

TILE = 192
_RED = (40, 40, 230)  # BGR
_YELLOW = (0, 220, 255)


def _tile(slice255: np.ndarray, lesion: np.ndarray | None, caption: str) -> np.ndarray:
    h, w = slice255.shape
    scale = TILE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = cv2.resize(
        np.clip(slice255, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_LINEAR
    )
    canvas = np.zeros((TILE, TILE), np.uint8)
    r0, c0 = (TILE - size[1]) // 2, (TILE - size[0]) // 2
    canvas[r0 : r0 + size[1], c0 : c0 + size[0]] = img
    out = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
    if lesion is not None and lesion.any():
        m = cv2.resize(lesion.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST_EXACT)
        full = np.zeros((TILE, TILE), np.uint8)
        full[r0 : r0 + size[1], c0 : c0 + size[0]] = m
        contours, _ = cv2.findContours(full, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, _RED, 1, lineType=cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    # Radiological view: column 0 is the patient's right.
    cv2.putText(out, "R", (4, TILE // 2), font, 0.5, _YELLOW, 1, cv2.LINE_AA)
    cv2.putText(out, "L", (TILE - 14, TILE // 2), font, 0.5, _YELLOW, 1, cv2.LINE_AA)
    cv2.putText(out, caption, (4, TILE - 6), font, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def cohort_montage(cohort, n_stroke: int = 10, n_tia: int = 2, seed: int = 0) -> np.ndarray:
    """Compose a BGR montage of ``n_stroke`` stroke and ``n_tia`` TIA patients."""
    rng = np.random.default_rng(seed)
    parts = cohort.participants
    groups = parts["group"] if "group" in parts.columns else None
    pids = list(cohort.participant_ids())
    stroke = [p for p in pids if groups is None or groups.get(p) == "stroke"]
    tia = [p for p in pids if groups is not None and groups.get(p) == "TIA"]
    chosen = list(rng.permutation(stroke)[:n_stroke]) + list(rng.permutation(tia)[:n_tia])
    tiles = []
    for pid in chosen:
        vol = cohort.dwi(pid)
        sl = axial_slices(vol.data)
        mask = cohort.lesion_mask(pid)
        ms = axial_slices(mask) if mask is not None else None
        if ms is not None and ms.any():
            k = int(ms.sum(axis=(1, 2)).argmax())
        else:
            k = sl.shape[0] // 2
        mrs = parts.at[pid, "mrs_3months"] if "mrs_3months" in parts.columns else np.nan
        grp = groups.get(pid) if groups is not None else ""
        mrs_txt = f" mRS {int(mrs)}" if np.isfinite(mrs) else ""
        caption = f"{pid} z{k} {grp}{mrs_txt}"
        tiles.append(_tile(sl[k], None if ms is None else ms[k], caption))
    if not tiles:
        raise ValueError(f"cohort {cohort.cohort_id}: no patients to show")
    cols = 4
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    return np.vstack(rows)


def write_montage(cohort, out: str | Path, **kwargs) -> Path:
    """Write :func:`cohort_montage` as a PNG (atomically) and return its path."""
    out = Path(out)
    img = cohort_montage(cohort, **kwargs)
    with atomic_path(out) as tmp:
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError(f"could not encode the montage for {out}")
        tmp.write_bytes(buf.tobytes())
    return out


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(prog="python -m hypo.report.montage", description=__doc__)
    ap.add_argument("--cohort", required=True, help="cohort folder (hypo layout)")
    ap.add_argument("--out", default="reports/montage/montage.png")
    ap.add_argument("--stroke", type=int, default=10)
    ap.add_argument("--tia", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    path = write_montage(
        load(args.cohort), args.out, n_stroke=args.stroke, n_tia=args.tia, seed=args.seed
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
