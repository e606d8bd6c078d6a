"""Faithfulness of Grad-CAM and Grad-CAM++ on a model's held-out lesion slices.

    python -m analyses.cam_faithfulness                        # stroke model, 16 slices
    python -m analyses.cam_faithfulness --model models/mrs-gap-128 --layers block4_relu block5_relu

Deletion (pixels to 0, most relevant first: lower AUC = more faithful), insertion (from a
blurred slice: higher = more faithful) and ROAD (noisy linear imputation, MoRF lower and
LeRF higher = more faithful), mean over slices and the model's classes, per method and
layer (hypo.cam.faithfulness). Scores are class probabilities.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hypo._util import rng_for  # noqa: E402
from hypo.cam import faithfulness_table  # noqa: E402
from hypo.study.experiments.frame import RunSettings, open_inputs  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/stroke-gap-128"))
    p.add_argument("--cohort", type=Path, default=None, help="default: the analysis cohort")
    p.add_argument("--slices", type=int, default=16)
    p.add_argument("--layers", nargs="+", default=None, help="default: the card's cam_layer")
    p.add_argument("--methods", nargs="+", default=["gradcam", "gradcampp"])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ns = RunSettings(out=Path("."), cohort=args.cohort, quiet=True)
    inp = open_inputs(ns, args.model)
    rows = inp.rows(lesion=True)
    pick = np.sort(rng_for(args.seed, "cam_faithfulness").choice(rows, args.slices, False))
    layers = args.layers or [inp.card.get("cam_layer")]
    t = faithfulness_table(inp.model, inp.images(pick), methods=tuple(args.methods),
                           layers=layers, steps=args.steps, seed=args.seed)  # fmt: skip
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"{args.model}: {len(pick)} held-out lesion slices (seed {args.seed}), "
              f"classes {inp.card['classes']}")  # fmt: skip
        print(t.round(4).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
