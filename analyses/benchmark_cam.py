"""Speed and memory of the CAM engine (issue 4). Not a test.

    python -m analyses.benchmark_cam            # speed + a 2,000-slice streamed store
    python -m analyses.benchmark_cam --slices 10000
    python -m analyses.benchmark_cam --quick    # short run
    python -m analyses.benchmark_cam --no-stream --no-tkv   # speed ratios only

Builds the paper's GAP architecture at 192 x 192 (3 classes, random weights, float32) and
times, on one batch of 32 random images: hypo's Grad-CAM + Grad-CAM++ for all 3 classes at
the ReLU after the last convolution, resized to the input; tf-keras-vis 0.8.7 doing the
same (one call per class and method, on the logit output); and the compiled forward pass
alone. It also times the same network with its convolutional body nested as a
sub-model (``keras.Model`` called inside the outer model, as a transfer-learning model is
built) against the flat network, and the bfloat16-saved network (explained in float32)
against a forward pass at the same precision (float32). Every speed is the median of
``--reps`` single calls (default 5) after three untimed ones, the contenders interleaved in
one process, so that load from other processes on a shared CPU hits all alike; the ratios
to the forward pass (and nested to flat) are also printed repeat by repeat, and as ratios
of the median CPU time per call (all threads of this process), which the load of other
processes moves much less than wall-clock time. The forward
pass is the model called in a ``tf.function`` on a tensor (as fast as ``predict_on_batch``
and faster than ``predict`` or an XLA-compiled call on this CPU). Then streams CAMs of a synthetic
memory-mapped slice store to disk in a fresh process and reports that process's peak
resident memory.
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


def _model(precision: str = "float32"):
    from hypo.nets import build_model

    return build_model("gap", INPUT, N_CLASSES, seed=0, precision=precision)


def _nested(flat, body_end: str):
    """The same layers with the body up to ``body_end`` as a nested functional model."""
    import keras

    body = keras.Model(flat.inputs, flat.get_layer(body_end).output, name="backbone")
    inp = keras.Input(INPUT, name="image")
    x = body(inp)
    names = [la.name for la in flat.layers]
    for la in flat.layers[names.index(body_end) + 1 :]:
        x = la(x)
    return keras.Model(inp, x, name="nested")


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


WARMUP = 3


def _interleaved_times(fns: dict, reps: int) -> tuple[dict, dict]:
    """Wall-clock and CPU seconds (this process, all threads) of ``reps`` single calls of
    each function, the calls interleaved so that load from other processes on a shared CPU
    hits all alike, and their order rotated every repeat so that no contender always runs
    first or last. Each function is first called ``WARMUP`` times, untimed (tracing,
    allocation, the weights' fingerprint function that hypo.cam compiles on a model's
    fourth call)."""
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    keys = list(fns)
    for r in range(reps):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            fn = fns[k]
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return wall, cpu


def _rates(times: dict, n_images: int) -> dict:
    """Images/s of each contender from the median time of its calls."""
    return {k: n_images / float(np.median(v)) for k, v in times.items()}


def _paired(times: dict, num: str, den: str) -> list[float]:
    """Speed of ``num`` relative to ``den`` in each repeat (calls of the same repeat ran
    next to each other, under the same load)."""
    return [float(d / n) for n, d in zip(times[num], times[den])]


def speed(reps: int, tkv_reps: int, tkv: bool = True) -> dict:
    import keras
    import tensorflow as tf

    from hypo.cam import compute, default_cam_layer

    model = _model()
    layer = default_cam_layer(model)
    x = np.random.default_rng(0).normal(size=(BATCH, *INPUT)).astype(np.float32)
    xt = tf.constant(x)

    def cam_of(m, lay):
        return lambda: compute(m, x, layer=lay, methods=METHODS, batch_size=BATCH)

    def forward_of(m):
        f = tf.function(lambda t: m(t, training=False))
        return lambda: f(xt).numpy()

    nested = _nested(model, layer)
    bf16 = _model("mixed_bfloat16")
    bf16.set_weights(model.get_weights())
    a = cam_of(model, layer)()
    b = cam_of(nested, "backbone/" + layer)()
    c = cam_of(bf16, layer)()
    same = max(float(np.abs(a[m] - b[m]).max() / max(a[m].max(), 1e-30)) for m in METHODS)
    same_bf = max(float(np.abs(a[m] - c[m]).max() / max(a[m].max(), 1e-30)) for m in METHODS)
    times, cpu = _interleaved_times(
        {
            "hypo": cam_of(model, layer),
            "forward": forward_of(model),
            "nested": cam_of(nested, "backbone/" + layer),
            "bf16": cam_of(bf16, layer),
            "forward_bf16": forward_of(bf16),
        },
        reps,
    )
    r = _rates(times, BATCH)
    out = {
        "layer": layer,
        "hypo": r["hypo"],
        "forward": r["forward"],
        "nested": r["nested"],
        "bf16": r["bf16"],
        "forward_bf16": r["forward_bf16"],
        "nested_max_rel_diff": same,
        "bf16_max_rel_diff": same_bf,
        "hypo_per_rep": _paired(times, "hypo", "forward"),
        "hypo_cpu": float(np.median(cpu["forward"]) / np.median(cpu["hypo"])),
        "nested_cpu": float(np.median(cpu["hypo"]) / np.median(cpu["nested"])),
        "nested_per_rep": _paired(times, "nested", "hypo"),
    }
    if not tkv:
        return out
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import CategoricalScore

    # tf-keras-vis scores the model output: give it the logit output (same layers, no copy).
    logit_model = keras.Model(model.inputs, model.get_layer("logits").output)
    gc, gpp = Gradcam(logit_model, clone=False), GradcamPlusPlus(logit_model, clone=False)
    kw = dict(penultimate_layer=layer, seek_penultimate_conv_layer=False, normalize_cam=False)

    def tkv_fn():
        for cl in range(N_CLASSES):
            score = CategoricalScore([cl] * BATCH)
            gc(score, x, **kw)
            gpp(score, x, **kw)

    r_tkv = _rates(
        _interleaved_times({"tkv": tkv_fn, "hypo": cam_of(model, layer)}, tkv_reps)[0], BATCH
    )
    out.update(tkv=r_tkv["tkv"], hypo_next_to_tkv=r_tkv["hypo"])
    return out


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


def _fmt(ratios: list[float]) -> str:
    med = float(np.median(ratios))
    return " ".join(f"{v:.2f}" for v in ratios) + f"  (median {med:.2f}, min {min(ratios):.2f})"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (fewer repeats, 256 slices)")
    ap.add_argument("--slices", type=int, default=None, help="slices in the streamed store")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=None, help="timed repeats (batches; default 5)")
    ap.add_argument("--no-tkv", action="store_true", help="skip the tf-keras-vis comparison")
    ap.add_argument("--no-stream", action="store_true", help="skip the streamed store")
    ap.add_argument("--_stream-child", dest="child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_workdir", dest="workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n_slices = args.slices if args.slices is not None else (256 if args.quick else 2000)
    if args.child:
        stream_child(n_slices, args.chunk_size, args.workdir)
        return

    reps = args.reps if args.reps is not None else (3 if args.quick else 5)
    tkv_reps = 1 if args.quick else 3
    import tensorflow as tf

    print(
        f"CPU cores: {os.cpu_count()}; TensorFlow {tf.__version__}; batch {BATCH}; "
        f"input {INPUT}; classes {N_CLASSES}; methods {METHODS}"
    )
    s = speed(reps, tkv_reps, tkv=not args.no_tkv)
    print(
        f"evaluation layer: {s['layer']}; median of {reps} interleaved calls after {WARMUP} "
        f"untimed ones; load average {os.getloadavg()[0]:.2f} (1 min) at the end"
    )
    print(f"{'':34s}{'images/s':>10s}")
    print(f"{'hypo.cam (GC + GC++, 3 cl.)':34s}{s['hypo']:10.1f}")
    print(f"{'  same, body nested as sub-model':34s}{s['nested']:10.1f}")
    print(f"{'  same, bf16-saved (float32 maps)':34s}{s['bf16']:10.1f}")
    if "tkv" in s:
        print(f"{'tf-keras-vis 0.8.7 (same)':34s}{s['tkv']:10.1f}")
    print(f"{'forward pass only (float32)':34s}{s['forward']:10.1f}")
    print(f"{'forward pass, bf16 model (bf16)':34s}{s['forward_bf16']:10.1f}")
    if "tkv" in s:
        print(
            f"hypo / tf-keras-vis = {s['hypo_next_to_tkv'] / s['tkv']:.1f}x   (target >= 10x; "
            f"hypo timed alternately with tf-keras-vis: {s['hypo_next_to_tkv']:.1f} images/s)"
        )
    print(f"hypo / forward      = {s['hypo'] / s['forward']:.2f}x  (target >= 0.85x)")
    print(f"  each repeat: {_fmt(s['hypo_per_rep'])}")
    print(f"  CPU time per call (all threads; load-robust): {s['hypo_cpu']:.2f}x")
    print(
        f"nested / flat       = {s['nested'] / s['hypo']:.2f}x  (target >= 0.90x; maps equal "
        f"to {s['nested_max_rel_diff']:.1e} of each method's max)"
    )
    print(f"  each repeat: {_fmt(s['nested_per_rep'])}")
    print(f"  CPU time per call: {s['nested_cpu']:.2f}x")
    print(
        f"bf16 model / forward = {s['bf16'] / s['forward']:.2f}x  (float32 maps; equal to the "
        f"float32 model's to {s['bf16_max_rel_diff']:.1e}); "
        f"{s['bf16'] / s['forward_bf16']:.2f}x its own bf16 forward pass"
    )
    if args.no_stream:
        return

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
