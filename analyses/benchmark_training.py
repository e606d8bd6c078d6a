"""Training throughput: hypo's training loop vs plain ``model.fit``, augmentation, bfloat16.

    python -m analyses.benchmark_training            # GAP model, 384 images, 128 x 128
    python -m analyses.benchmark_training --n 2048 --size 192 --epochs 4 --out bench.csv

All rows use the same model, batch size, data and machine in one process. Images per
second count training images only, over the epochs after the first (which traces and
compiles). ``plain fit`` is ``model.fit`` on in-memory NumPy arrays; ``hypo`` is
:func:`hypo.nets.training.train` (tf.data pipeline, checkpoint each epoch, CSV log,
early-stopping bookkeeping) without class weights. Both validate on the same slices.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _data(n, size, seed=0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    per = 16
    pid = np.repeat([f"sub-{i:03d}" for i in range(int(np.ceil(n / per)))], per)[:n]
    y = (rng.random(n) < 0.3).astype(int)
    x = rng.normal(size=(n, size, size)).astype("float32")
    r = size // 8
    x[y == 1, 2 * r : 3 * r, 5 * r : 6 * r] += 2.0
    groups = np.where(pd.factorize(pid)[0] % 3 == 0, "TIA", "stroke")
    return x, y, pid, pd.DataFrame({"participant_id": pid, "group": groups})


def _plain_fit(x, y, train_rows, val_rows, args, precision):
    import keras
    import numpy as np

    from hypo.nets.architectures import build_model

    m = build_model(args.model, (args.size, args.size, 1), seed=0, precision=precision)
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
              metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])  # fmt: skip
    times = []

    class T(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, e, logs=None):
            times.append(time.perf_counter() - self.t)

    m.fit(
        x[train_rows][..., None],
        np.eye(2)[y[train_rows]],
        validation_data=(x[val_rows][..., None], np.eye(2)[y[val_rows]]),
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=[T()],
        verbose=0,
    )
    return times


def _hypo(x, y, pid, split, args, precision, augment):
    from hypo.nets.data import AugmentConfig
    from hypo.nets.training import TrainConfig, train

    cfg = TrainConfig(
        architecture=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=10**6,
        augment=AugmentConfig(enabled=augment),
        class_weight=False,
        precision=precision,
    )
    with tempfile.TemporaryDirectory() as d:
        r = train(x, y, pid, split, d, cfg, verbose=0)
    return r.epoch_seconds


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m analyses.benchmark_training")
    p.add_argument("--model", default="gap")
    p.add_argument("--n", type=int, default=384, help="number of images")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="the first is not timed")
    p.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 rows")
    p.add_argument("--out", default=None, help="also write the table as CSV")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is warm-up)")

    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from hypo._util import write_table_atomic
    from hypo.nets.splits import patient_split

    # hypo trains with op determinism on; the plain baseline runs under the same setting.
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    x, y, pid, table = _data(args.n, args.size)
    split = patient_split(table, val_size=0.1, test_size=0.05, seed=0)
    parts = split.indices(pid)
    n_train = len(parts["train"])
    rows = []

    def add(name, precision, augment, times):
        timed = float(np.sum(times[1:]))
        rows.append({"loop": name, "precision": precision, "augment": augment,
                     "images_per_s": n_train * (len(times) - 1) / timed,
                     "s_per_epoch": timed / (len(times) - 1)})  # fmt: skip
        print(
            f"  {name:10s} {precision:15s} augment={augment!s:5s} {rows[-1]['images_per_s']:8.1f} img/s"
        )

    precisions = ["float32"] + ([] if args.no_bf16 else ["mixed_bfloat16"])
    print(f"{args.model}, {n_train} training images of {args.size}x{args.size}, batch "
          f"{args.batch_size}, {args.epochs} epochs (first untimed), device: "
          f"{[d.device_type for d in tf.config.list_logical_devices()]}")  # fmt: skip
    for prec in precisions:
        add("plain fit", prec, False, _plain_fit(x, y, parts["train"], parts["val"], args, prec))
        add("hypo", prec, False, _hypo(x, y, pid, split, args, prec, False))
        add("hypo", prec, True, _hypo(x, y, pid, split, args, prec, True))
    df = pd.DataFrame(rows)
    ref = df[(df["loop"] == "plain fit")].set_index("precision")["images_per_s"]
    df["ratio_to_plain_fit"] = df["images_per_s"] / df["precision"].map(ref)
    print()
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        write_table_atomic(args.out, df)
    return df


if __name__ == "__main__":
    main()
