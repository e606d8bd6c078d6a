"""Speed of the outcome model: the encoder pass against plain ``model.predict``, and the folds.

    python -m analyses.benchmark_outcome [--slices 1024] [--repeats 3] [--pooling mean]

1. Encoder pass: :func:`hypo.nets.outcome.embed_slices` (the stroke model's embedding
   layer and its probabilities from one pass) against ``model.predict`` on the same
   development-cohort slices, alternated ``--repeats`` times; slices/s of each (best of
   the repeats) and their ratio (target >= 0.9x).
2. Folds: the cross-fit of the image model with one pooling (penalty chosen on inner folds)
   on the cached embeddings of the development cohort; seconds per fold and for all folds
   (target <= 3 min for all folds of one pooling on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import hypo.cohort as hc
from hypo.nets.io import load_model
from hypo.nets.outcome import embed_slices, encoder_model
from hypo.paths import REPO_ROOT, default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.study.outcome import (
    OutcomeConfig,
    cross_fit_image,
    load_outcome_data,
    outcome_folds,
    pooled_features,
)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default=str(REPO_ROOT / "models" / "stroke-gap-128"))
    ap.add_argument("--slices", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pooling", default="mean")
    args = ap.parse_args(argv)

    config = OutcomeConfig(encoder=args.encoder)
    model = load_model(config.encoder)
    data = load_outcome_data(default_cohort_dir("dev"), config, model)
    cohort = hc.load(default_cohort_dir("dev"))
    store = build_slice_store(cohort, PreprocessConfig(**model.hypo_card["preprocessing"]),
                              progress=False)  # fmt: skip
    x = np.asarray(store.images[: args.slices], np.float32)[..., None]
    enc = encoder_model(model, config.layer)
    # Warm both up (graph tracing) before timing.
    embed_slices(enc, x[: args.batch], args.batch)
    model.predict(x[: args.batch], batch_size=args.batch, verbose=0)
    t_enc, t_pred = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        model.predict(x, batch_size=args.batch, verbose=0)
        t_pred.append(time.perf_counter() - t)
        t = time.perf_counter()
        embed_slices(enc, x, args.batch)
        t_enc.append(time.perf_counter() - t)
    rate_enc, rate_pred = len(x) / min(t_enc), len(x) / min(t_pred)

    pooled = pooled_features(data, (args.pooling,))
    folds = outcome_folds(data.patients["participant_id"], data.y, config.n_folds, config.seed)
    t = time.perf_counter()
    cf = cross_fit_image(data, pooled, folds, config, fixed_pooling=[args.pooling] * len(folds))
    all_folds = time.perf_counter() - t
    out = {
        "slices": len(x),
        "encoder_slices_per_s": rate_enc,
        "predict_slices_per_s": rate_pred,
        "encoder_vs_predict": rate_enc / rate_pred,
        "encoder_pass_s": min(t_enc),
        "cohort_slices": len(data.embeddings),
        "cohort_encoder_pass_s_estimate": len(data.embeddings) / rate_enc,
        "pooling": args.pooling,
        "patients": len(data.y),
        "embedding_dim": int(data.embeddings.embeddings.shape[1]),
        "n_components": config.n_components,
        "l2_grid": list(config.l2_grid),
        "inner_folds": config.inner_folds,
        "all_folds_s": all_folds,
        "per_fold_s": all_folds / len(folds),
        "l2_per_fold": [r["l2"] for r in cf.per_fold],
    }
    print(f"encoder pass  {rate_enc:8.1f} slices/s  (embedding + probabilities, one pass)")
    print(f"model.predict {rate_pred:8.1f} slices/s  (same {len(x)} slices, batch {args.batch})")
    print(f"ratio         {rate_enc / rate_pred:8.3f} x  (target >= 0.9)")
    print(f"encoder pass  {min(t_enc):8.1f} s for {len(x)} slices; the cohort's "
          f"{len(data.embeddings)} slices ~{len(data.embeddings) / rate_enc:.0f} s, once")  # fmt: skip
    print(f"folds         {all_folds:8.1f} s for {len(folds)} folds of pooling {args.pooling!r} "
          f"({all_folds / len(folds):.1f} s per fold; target <= 180 s for all)")  # fmt: skip
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
