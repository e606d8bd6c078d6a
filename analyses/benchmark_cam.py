"""Speed and memory of the CAM engine (issue 4). Not a test.

    python -m analyses.benchmark_cam            # speed + a 2,000-slice streamed store
    python -m analyses.benchmark_cam --slices 10000
    python -m analyses.benchmark_cam --quick    # short run

Builds the paper's GAP architecture at 192 x 192 (3 classes, random weights, float32) and
times, on one batch of 32 random images: hypo's Grad-CAM + Grad-CAM++ for all 3 classes at
the ReLU after the last convolution, resized to the input; tf-keras-vis 0.8.7 doing the
same (one call per class and method, on the logit output); and the compiled forward pass
alone. Then streams CAMs of a synthetic memory-mapped slice store to disk in a fresh
process and reports that process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

INPUT = (192, 192, 1)
N_CLASSES = 3
BATCH = 32
METHODS = ("gradcam", "gradcampp")


def _model():
    from hypo.nets import build_model

    return build_model("gap", INPUT, N_CLASSES, seed=0)


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec on Linux and
    would report the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _interleaved_rates(fns: dict, n_images: int, reps: int) -> dict:
    """Images/s of each function from the median time of ``reps`` single calls, the calls
    interleaved so that load from other processes on a shared CPU hits all alike."""
    for fn in fns.values():
        fn()  # warm-up: tracing, allocation
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: n_images / float(np.median(v)) for k, v in times.items()}


def speed(reps: int, tkv_reps: int) -> dict:
    import keras
    import tensorflow as tf

    from hypo.cam import compute, default_cam_layer

    model = _model()
    layer = default_cam_layer(model)
    x = np.random.default_rng(0).normal(size=(BATCH, *INPUT)).astype(np.float32)

    def hypo_cam():
        return compute(model, x, layer=layer, methods=METHODS, batch_size=BATCH)

    fwd = tf.function(lambda t: model(t, training=False))
    xt = tf.constant(x)

    def forward():
        return fwd(xt).numpy()

    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import CategoricalScore

    # tf-keras-vis scores the model output: give it the logit output (same layers, no copy).
    logit_model = keras.Model(model.inputs, model.get_layer("logits").output)
    gc, gpp = Gradcam(logit_model, clone=False), GradcamPlusPlus(logit_model, clone=False)
    kw = dict(penultimate_layer=layer, seek_penultimate_conv_layer=False, normalize_cam=False)

    def tkv():
        for c in range(N_CLASSES):
            score = CategoricalScore([c] * BATCH)
            gc(score, x, **kw)
            gpp(score, x, **kw)

    r = _interleaved_rates({"hypo": hypo_cam, "forward": forward}, BATCH, reps)
    r_tkv = _interleaved_rates({"tkv": tkv, "hypo": hypo_cam}, BATCH, tkv_reps)
    return {
        "layer": layer,
        "hypo": r["hypo"],
        "forward": r["forward"],
        "tkv": r_tkv["tkv"],
        "hypo_next_to_tkv": r_tkv["hypo"],
    }


def stream_child(n_slices: int, chunk_size: int, workdir: str) -> None:
    """Run in a fresh process: build a memmap store, stream CAMs to disk, print peak RSS."""
    import pandas as pd

    from hypo.cam.stream import compute_store

    work = Path(workdir)
    path = work / "images.npy"
    # Written with plain file writes: filling a writable memory map would leave the whole
    # file resident in this process and blur the peak memory measured below.
    with open(path, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n_slices, 192, 192)}
        np.lib.format.write_array_header_1_0(f, header)
        rng = np.random.default_rng(1)
        for s in range(0, n_slices, 256):
            k = min(256, n_slices - s)
            f.write(rng.normal(size=(k, 192, 192)).astype("<f4").tobytes())
    store = SimpleNamespace(
        images=np.load(path, mmap_mode="r"),
        table=pd.DataFrame({"participant_id": [f"sub-{i // 30:04d}" for i in range(n_slices)]}),
    )
    model = _model()
    rss0 = _peak_rss_mib()
    try:  # reset the high-water mark so the peak below is that of streaming (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    t0 = time.perf_counter()
    cs = compute_store(
        model,
        store,
        work / "cams",
        methods=METHODS,
        chunk_size=chunk_size,
        batch_size=BATCH,
        progress=False,
    )
    dt = time.perf_counter() - t0
    peak = _peak_rss_mib()
    disk = sum(f.stat().st_size for f in (work / "cams").rglob("*") if f.is_file()) / 2**20
    print(
        f"STREAM slices={n_slices} chunks={cs.n_chunks} seconds={dt:.1f} "
        f"rate={n_slices / dt:.1f} peak_rss_mib={peak:.0f} rss_before_mib={rss0:.0f} "
        f"cache_mib={disk:.1f}"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (fewer repeats, 256 slices)")
    ap.add_argument("--slices", type=int, default=None, help="slices in the streamed store")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=None, help="timed repeats (batches)")
    ap.add_argument("--_stream-child", dest="child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_workdir", dest="workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n_slices = args.slices if args.slices is not None else (256 if args.quick else 2000)
    if args.child:
        stream_child(n_slices, args.chunk_size, args.workdir)
        return

    reps = args.reps if args.reps is not None else (3 if args.quick else 10)
    tkv_reps = 1 if args.quick else 3
    import tensorflow as tf

    print(
        f"CPU cores: {os.cpu_count()}; TensorFlow {tf.__version__}; batch {BATCH}; "
        f"input {INPUT}; classes {N_CLASSES}; methods {METHODS}"
    )
    s = speed(reps, tkv_reps)
    print(f"evaluation layer: {s['layer']}")
    print(f"{'':28s}{'images/s':>10s}")
    print(f"{'hypo.cam (GC + GC++, 3 cl.)':28s}{s['hypo']:10.1f}")
    print(f"{'tf-keras-vis 0.8.7 (same)':28s}{s['tkv']:10.1f}")
    print(f"{'forward pass only':28s}{s['forward']:10.1f}")
    print(
        f"hypo / tf-keras-vis = {s['hypo_next_to_tkv'] / s['tkv']:.1f}x   (target >= 10x; "
        f"hypo timed alternately with tf-keras-vis: {s['hypo_next_to_tkv']:.1f} images/s)"
    )
    print(f"hypo / forward      = {s['hypo'] / s['forward']:.2f}x  (target >= 0.6x)")

    with tempfile.TemporaryDirectory(prefix="hypo-cam-bench-") as work:
        cmd = [
            sys.executable,
            "-m",
            "analyses.benchmark_cam",
            "--_stream-child",
            "--_workdir",
            work,
            "--slices",
            str(n_slices),
            "--chunk-size",
            str(args.chunk_size),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("STREAM")]
        if out.returncode != 0 or not line:
            print(out.stdout[-2000:], out.stderr[-4000:])
            raise SystemExit("streaming run failed")
        fields = dict(kv.split("=") for kv in line[0].split()[1:])
        peak = float(fields["peak_rss_mib"])
        print(
            f"streamed store: {fields['slices']} slices in {fields['chunks']} chunks, "
            f"{fields['seconds']} s ({fields['rate']} slices/s), cache {fields['cache_mib']} MiB"
        )
        print(
            f"peak RSS of the streaming process: {peak:.0f} MiB "
            f"({'under' if peak < 2048 else 'OVER'} the 2 GiB limit; "
            f"{fields['rss_before_mib']} MiB before streaming)"
        )


if __name__ == "__main__":
    main()
