"""Speed of the anatomy (volume method against the per-slice method it replaced, side by
side in one run) and of the map features (from cached anatomy).

    python -m analyses.benchmark_features [--size 192] [--slices 2048] [--batch 256]
                                          [--patients 6] [--seed 0]

Anatomy: generates (once, cached) a small synthetic cohort, builds its slice store and
times, over the same slices, (a) ``legacy``: today's predecessor, the per-slice method of
ANATOMY_VERSION 5 (brain by per-slice Otsu + solidity, midline by a per-slice symmetry
search), kept frozen in :mod:`hypo.features._anatomy_legacy`, and (b) the volume method
(each patient's raw volume read, 3D brain mask, midsagittal plane, projection into the
slices, then the per-slice ventricles, edge band and lesion). Both exclude cache writes.
Target: >= 4x the legacy slices/s. Each is timed three times, alternated, best of three,
in wall time and in CPU time (``anatomy_speedup_cpu``: steadier on a shared machine).
(c) ``workers``: the volume method as the main job runs it, patients in the shared worker
processes (:func:`hypo._util.env_workers`, started before the timing), wall time only
(``anatomy_speedup_workers``; skipped with one worker).

Map features: builds phantom heads (ellipse, two ventricles, a one-sided lesion, random
in-plane rotation), computes their anatomy once, then times
:func:`hypo.features.maps.map_features` on raw CAM-like maps (a 12 x 12 grid resized
bilinearly to the slice size, as a last-block CAM would be) over ``--slices`` slices in
batches of ``--batch`` (target >= 1000 slices/s on a 2-core CPU). Memory is bounded by
the batch: the peak of Python allocations during the feature loop is printed.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import cv2
import numpy as np

import hypo.cohort as hc
from hypo._util import blas_one_thread, env_workers
from hypo.cohort.synthetic import generate_cohort
from hypo.features import _anatomy_legacy
from hypo.features.anatomy import (
    AnatomyConfig,
    _parallel_volume_anatomy,
    _patient_volume_anatomy,
    compute_anatomy,
)
from hypo.features.maps import map_features
from hypo.paths import cache_dir
from hypo.preprocess import PreprocessConfig, build_slice_store


def phantoms(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[:size, :size].astype(float)
    cy = cx = (size - 1) / 2
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        img = np.full((size, size), 10.0)
        brain = ((r - cy) / (0.42 * size)) ** 2 + ((c - cx) / (0.34 * size)) ** 2 <= 1
        img[brain] = 120.0
        for s in (-1, 1):
            v = ((r - cy + 0.05 * size) / (0.12 * size)) ** 2 + (
                (c - cx - s * 0.07 * size) / (0.04 * size)
            ) ** 2 <= 1
            img[v] = 25.0
        lc = cx + rng.choice([-1, 1]) * 0.18 * size
        img[((r - cy) ** 2 + (c - lc) ** 2 <= (0.06 * size) ** 2) & brain] = 250.0
        img += rng.normal(0, 3, img.shape)
        m = cv2.getRotationMatrix2D((cx, cy), float(rng.uniform(-10, 10)), 1.0)
        img = cv2.warpAffine(img.astype(np.float32), m, (size, size), borderValue=10.0)
        out[i] = (img - img.mean()) / img.std()
    return out


def cam_like(n: int, size: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.maximum(rng.normal(0, 1, (n, 12, 12)), 0).astype(np.float32)
    return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in raw])


def legacy(images: np.ndarray, pixel_mm: np.ndarray, groups: np.ndarray):
    """Today's predecessor: the frozen per-slice anatomy (ANATOMY_VERSION 5)."""
    return _anatomy_legacy.compute_anatomy(images, pixel_mm, groups=groups)


def _alternate(repeats: int, *runs):
    """Best of ``repeats`` (wall, CPU) seconds of each run, the runs alternated (on a
    shared machine the load changes within a run); a run that is None gives (inf, inf)."""
    best = [[np.inf, np.inf] for _ in runs]
    for _ in range(repeats):
        for b, run in zip(best, runs):
            if run is None:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            b[0] = min(b[0], time.perf_counter() - t0)
            b[1] = min(b[1], time.process_time() - c0)
    return [tuple(b) for b in best]


def anatomy_speed(n_patients: int, seed: int, size: int, repeats: int = 3) -> dict:
    """Slices/s of the legacy and the volume anatomy over one synthetic store's slices."""
    cohort_dir = cache_dir() / "benchmark_features" / f"syn{n_patients}-s{seed}"
    generate_cohort(cohort_dir, n_patients, seed=seed, workers=1, progress=False)
    cohort = hc.load(cohort_dir)
    store = build_slice_store(cohort, PreprocessConfig(size=size), progress=False)
    tab = store.table
    pids = tab["participant_id"].astype(str).to_numpy()
    pmm = tab[["pixel_mm_row", "pixel_mm_col"]].to_numpy()
    parts = [np.flatnonzero(pids == p) for p in dict.fromkeys(pids)]
    images = [np.asarray(store.images[i]) for i in parts]
    config = AnatomyConfig()

    def run_legacy():
        for idx, img in zip(parts, images):
            legacy(img, pmm[idx], pids[idx])

    bounds = [(int(i[0]), int(i[-1]) + 1) for i in parts]
    n_workers = env_workers()

    def run_workers():
        # As the main job runs it: patients in the shared worker processes (started before
        # the timing, as they are in a run by the slice-store stage).
        for _ in _parallel_volume_anatomy(store, cohort, config, bounds, n_workers):
            pass

    def run_volume():
        for idx, img in zip(parts, images):
            _, brains, planes = _patient_volume_anatomy(cohort, tab.iloc[idx], config)
            compute_anatomy(img, pmm[idx], groups=pids[idx], config=config, brains=brains,
                            planes=planes)  # fmt: skip

    # Alternated, best of ``repeats``: on a shared machine the load changes within a run.
    # Wall time and this process's CPU time (user + system, all threads): the CPU time
    # counts the work done, whatever share of the cores other programs leave.
    if n_workers > 1:
        run_workers()  # start the pool
    # Both methods with BLAS on one thread, as the anatomy stage runs (and its workers):
    # BLAS threads left spinning after a small product would count in the CPU time.
    with blas_one_thread():
        timed = _alternate(repeats, run_legacy, run_volume,
                           run_workers if n_workers > 1 else None)  # fmt: skip
    (t_legacy, c_legacy), (t_new, c_new), (t_work, _) = timed
    n = len(tab)
    return {
        "anatomy_slices": n,
        "anatomy_patients": len(parts),
        "anatomy_legacy_slices_per_s": round(n / t_legacy, 1),
        "anatomy_volume_slices_per_s": round(n / t_new, 1),
        "anatomy_speedup": round(t_legacy / t_new, 2),
        "anatomy_legacy_slices_per_cpu_s": round(n / c_legacy, 1),
        "anatomy_volume_slices_per_cpu_s": round(n / c_new, 1),
        "anatomy_speedup_cpu": round(c_legacy / c_new, 2),
        "anatomy_workers": n_workers,
        "anatomy_volume_workers_slices_per_s": round(n / t_work, 1) if n_workers > 1 else None,
        "anatomy_speedup_workers": round(t_legacy / t_work, 2) if n_workers > 1 else None,
        "anatomy_target_speedup": 4.0,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--slices", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--anatomy-slices", type=int, default=64)
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quick", action="store_true", help="a short run: 128 px, 256 slices, 2 patients"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.slices, args.anatomy_slices, args.patients = 128, 256, 16, 2

    anat = anatomy_speed(args.patients, args.seed, args.size)
    imgs = phantoms(args.anatomy_slices, args.size)
    an = compute_anatomy(imgs, 1.0)
    # Cached anatomy, reused cyclically: the feature loop reads labels as it would from disk.
    reps = int(np.ceil(args.slices / len(an)))
    labels = np.tile(an.labels, (reps, 1, 1))[: args.slices]
    maps = cam_like(args.batch, args.size)
    map_features(maps[:8], labels[:8])  # warm-up

    def loop() -> int:
        n = 0
        for s in range(0, args.slices, args.batch):
            e = min(args.slices, s + args.batch)
            n += len(map_features(maps[: e - s], labels[s:e]))
        return n

    # Timed without tracemalloc (it hooks every NumPy allocation and slows the loop), then
    # the same loop again under tracemalloc for the memory peak.
    t0 = time.perf_counter()
    n = loop()
    t_feat = time.perf_counter() - t0
    tracemalloc.start()
    loop()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    res = {
        "size_px": args.size,
        **anat,
        "feature_slices": n,
        "feature_slices_per_s": round(n / t_feat, 1),
        "feature_target_slices_per_s": 1000,
        "batch": args.batch,
        "feature_peak_python_alloc_mb": round(peak / 2**20, 1),
        "batch_maps_mb": round(args.batch * args.size**2 * 4 / 2**20, 1),
    }
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
