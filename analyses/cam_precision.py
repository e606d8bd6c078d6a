"""How much the shipped models' maps change when computed in float32 instead of bfloat16.

    python -m analyses.cam_precision                  # 64 lesion slices per model
    python -m analyses.cam_precision --slices 128 --models models/mrs-gap-128

The shipped models were trained and saved under ``mixed_bfloat16``; before issue 20 every
map was computed in that policy (bfloat16 activations and gradients). hypo.cam now explains
any model in float32 (a float32 clone with the same weights). For held-out lesion slices of
the analysis cohort this prints, per model, method and class, the relative difference of
each raw map (max |bf16 - f32| / max f32 map: median, 95th percentile, max), the Spearman
correlation of the two maps, and the change of the slice-level features the registered
hypotheses use (Grad-CAM of the hypotheses' class, features as hypo.features computes them).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from hypo._util import rng_for  # noqa: E402
from hypo.cam.sanity import precision_effect  # noqa: E402
from hypo.features import anatomy_for_store  # noqa: E402
from hypo.features.maps import map_features  # noqa: E402
from hypo.study.experiments.frame import RunSettings, open_inputs  # noqa: E402

MODELS = ("models/stroke-gap-128", "models/mrs-gap-128")
#: Features of the registered hypotheses (analyses/registry/<version>/hypotheses/*.toml).
REGISTERED = (
    "asymmetry_ipsi_contra",
    "relevance_mass_lesion",
    "edge_density_ratio",
    "ventricle_density_ratio",
)
#: The class whose maps the registered hypotheses read (the first one the model has).
HYPOTHESIS_CLASSES = ("mRS 3-6", "stroke")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path, default=[Path(m) for m in MODELS])
    p.add_argument("--cohort", type=Path, default=None, help="default: the analysis cohort")
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for model_dir in args.models:
        ns = RunSettings(out=Path("."), cohort=args.cohort, quiet=True)
        inp = open_inputs(ns, model_dir)
        rows = inp.rows(lesion=True)
        pick = np.sort(rng_for(args.seed, "cam_precision").choice(rows, args.slices, False))
        x = inp.images(pick)
        policies = sorted({la.dtype_policy.name for la in inp.model.layers})
        table, own, f32 = precision_effect(inp.model, x, layer=inp.card.get("cam_layer"))
        names = list(inp.card["classes"])
        print(f"\n{model_dir} (policies {policies}; layer {f32.layer}; {len(pick)} held-out "
              f"lesion slices, seed {args.seed})")  # fmt: skip
        print(f"  max |logit difference| {table['logit_diff'].max():.2e}")
        print(f"  {'method':10s} {'class':10s} {'median':>9s} {'p95':>9s} {'max':>9s} "
              f"{'min rho':>8s}")  # fmt: skip
        for (m, c), g in table.groupby(["method", "class"], sort=False):
            r = g["rel_max_diff"].dropna()
            print(f"  {m:10s} {names[c]:10s} {r.median():9.2e} {r.quantile(0.95):9.2e} "
                  f"{r.max():9.2e} {g['spearman'].min():8.4f}")  # fmt: skip
        anatomy = anatomy_for_store(inp.store, progress=False)
        labels = np.asarray(anatomy.labels[pick])
        lesion = inp.lesion_masks(pick)
        c = names.index(next(h for h in HYPOTHESIS_CLASSES if h in names))
        fa = map_features(own.class_maps("gradcam", c), labels, lesion=lesion,
                          on_empty_brain="nan")  # fmt: skip
        fb = map_features(f32.class_maps("gradcam", c), labels, lesion=lesion,
                          on_empty_brain="nan")  # fmt: skip
        print(f"  registered features (Grad-CAM, class {names[c]!r}), bf16 vs float32 per slice:")
        for f in REGISTERED:
            cols = [k for k in fb.columns if k == f]
            if not cols:
                print(f"    {f}: not a slice-level column")
                continue
            a, b = fa[f].to_numpy(float), fb[f].to_numpy(float)
            ok = np.isfinite(a) & np.isfinite(b)
            d = np.abs(a - b)[ok]
            sd = np.nanstd(b)
            print(f"    {f:26s} max |diff| {d.max():.2e}  median {np.median(d):.2e}  "
                  f"(slice SD {sd:.3f}; max diff / SD {d.max() / sd if sd else np.nan:.2e}; "
                  f"{int(ok.sum())} slices)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
