"""The outcome model as a map source: bag CAMs -> the study's per-patient map features.

Two uses:

1. :func:`outcome_feature_run` -- the shipped outcome model (``models/outcome-mil-128``) as
   the third map source of the main study (:func:`hypo.study.run_study`): bag CAMs of the
   analysis cohort's slice store (:func:`hypo.cam.bag.bag_cam_store`, the shipped head and
   pooling) through :func:`hypo.features.pipeline.run_features`, so the outcome maps get
   the same anatomy, QC, features, aggregations, image-made controls and leakage flag as
   the CNNs' maps.
2. :func:`outcome_map_features` -- one *map set* per development outcome vector, for power
   replicates in a nested design: the ordinal head alone is refitted on the development
   cohort's fixed slice embeddings with the given outcomes, and its bag CAMs of the
   analysis cohort are turned into the registered features. Everything that does not
   depend on an outcome (slice stores, anatomy, embeddings, the encoder) is computed once
   per process and cached on disk; the maps and features of a head are cached under the
   hash of its coefficients.

What a map set conditions on: the development and analysis images (one draw of each
cohort), the frozen encoder and its slice embeddings, the shipped model's pooling, penalty
(``l2``) and principal-axes count, and the development patients analysed. Only the
development outcomes (and so the head's coefficients) vary between map sets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import stable_hash, write_json_atomic, write_table_atomic
from hypo.cam.bag import FINE_LAYER, bag_cam_store, bag_cam_stores
from hypo.nets.io import OutcomeModel, load_outcome_model
from hypo.nets.outcome import OrdinalHead, fit_ordinal_head
from hypo.paths import cache_dir, default_cohort_dir

from .config import AGGREGATION_SUFFIX, OUTCOME_MODEL
from .outcome import (
    LEVELS,
    N_COMPONENTS,
    OutcomeConfig,
    OutcomeData,
    image_penalty,
    load_outcome_data,
    pooled_features,
)

#: The registered features (``analyses/hypotheses/*.toml``) and their aggregation.
OUTCOME_FEATURES = (
    "asymmetry_ipsi_contra",
    "ventricle_density_ratio",
    "edge_density_ratio",
    "relevance_mass_lesion",
)
OUTCOME_AGGREGATION = "lesion_slices_map_mass_weighted_mean"
#: Layers of a map set by default: the card's ``cam_layer`` (8 x 8 at 128 px) and finer.
DEFAULT_LAYERS = ("block5_relu", "block4_relu", FINE_LAYER)
DEFAULT_METHODS = ("gradcam", "gradcampp")
#: Methods the power study compares (issue 17 item 4); with LayerCAM at several layers a map
#: set also holds their multi-layer fusion (layer ``fusion``, :mod:`hypo.cam.fusion`).
CANDIDATE_METHODS = ("gradcam", "gradcampp", "layercam")
#: Largest |eta| difference allowed between the shipped head and its refit on the
#: development cohort's own mRS (the check that the refit reproduces the shipped fit).
REFIT_TOLERANCE = 1e-3
MAP_SET_VERSION = 2


def fuses(layers, methods) -> bool:
    """Whether a map set of these layers and methods also holds the LayerCAM fusion."""
    return "layercam" in methods and len(layers) > 1


def candidates(layers, methods) -> list[tuple[str, str]]:
    """(layer, method) of every map of a map set: each layer x method, then the LayerCAM
    fusion (layer ``fusion``) where :func:`fuses`."""
    from hypo.cam.fusion import FUSION_LAYER

    pairs = [(la, me) for la in layers for me in methods]
    return pairs + [(FUSION_LAYER, "layercam")] if fuses(layers, methods) else pairs


def map_column(feature: str, method: str, layer: str) -> str:
    """Column of a map-set table: ``outcome__<feature>__<method>@<layer>``."""
    return f"outcome__{feature}__{method}@{layer}"


# --------------------------------------------------------------------------- main study


def bag_cam_fn(model: OutcomeModel, layer: str, methods: Sequence[str],
               random_control: bool = False, seed: int = 0):  # fmt: skip
    """``cam_fn`` for :func:`hypo.features.pipeline.run_features`: the outcome model's bag
    CAMs of a store at ``layer``, cached under ``cam_root/<layer>-bag-<head>-s<store>``;
    with ``random_control`` also Grad-CAM of the same head on the encoder with randomised
    weights (:func:`hypo.cam.sanity.randomised_weights`, every weighted layer; BatchNorm
    statistics kept) as ``control_random_model``."""

    def fn(store, cam_root: Path):
        head_key = stable_hash(
            {"head": model.head.to_dict(), "pooling": model.pooling,
             "embedding_layer": model.embedding_layer}, 12,
        )  # fmt: skip
        skey = stable_hash(Path(store.path).name, 8)
        cdir = Path(cam_root) / f"{layer}-bag-{head_key}-s{skey}"
        cs = bag_cam_store(model.encoder, store, model.head, model.pooling, cdir, layer=layer,
                           methods=tuple(methods), embedding_layer=model.embedding_layer)  # fmt: skip
        cams, dirs = [cs], [cdir]
        if random_control:
            from hypo.cam import sanity

            rdir = Path(cam_root) / f"{layer}-bag-{head_key}-random-s{seed}-s{skey}"
            names = [la.name for la in sanity.weighted_layers(model.encoder)]
            with sanity.randomised_weights(model.encoder, names, seed=seed):
                rc = bag_cam_store(model.encoder, store, model.head, model.pooling, rdir,
                                   layer=layer, methods=("gradcam",),
                                   embedding_layer=model.embedding_layer)  # fmt: skip
            cams.append(("control_random_model", rc))
            dirs.append(rdir)
        return cams, dirs

    return fn


def outcome_feature_run(cohort, model: OutcomeModel, out_dir, *, layer=None, methods=DEFAULT_METHODS,
                        controls=("control_uniform", "control_intensity"), random_control=False,
                        seed=0, progress=True, stage=None, max_qc_fail_fraction=None):  # fmt: skip
    """The outcome model's map features of ``cohort`` (a :class:`FeatureRun`), as the
    study computes them for the CNNs: the slice store of the card's preprocessing (the
    encoder's, so the CNNs' store and anatomy are reused), bag CAMs (class index 0: the
    ordinal linear predictor ``eta``) at ``layer`` (default the card's ``cam_layer``), the
    image-made controls, with ``random_control`` the randomised-encoder control
    (:func:`bag_cam_fn`), the anatomy QC, and ``in_model_training`` from the outcome card
    (every development patient its head or encoder saw).

    Conditioned on the shipped head, pooling and encoder."""
    from hypo.features.pipeline import run_features

    layer = layer or model.cam_layer
    return run_features(cohort, model.folder, out_dir, layer=layer, methods=methods,
                        controls=controls, progress=progress, stage=stage,
                        max_qc_fail_fraction=max_qc_fail_fraction,
                        cam_fn=bag_cam_fn(model, layer, methods, random_control, seed))  # fmt: skip


# --------------------------------------------------------------------------- power map sets


@dataclass
class MapInputs:
    """What every map set shares (nothing here depends on an outcome).

    Attributes
    ----------
    model : OutcomeModel
        The shipped outcome model (encoder, head, pooling; ``card['l2']`` the penalty).
    dev : OutcomeData
        The development patients the head is fitted on (bag order = the order of
        ``dev_mrs``), their embeddings, and on a synthetic cohort the outcome covariates.
    design : ndarray (n_dev, d + 1)
        Their pooled embeddings with the shipped pooling, then the lesion extent.
    l2, n_components : the shipped head's penalty and principal-axes count.
    store, anatomy : the analysis cohort's slice store and anatomy, restricted to
        ``patients`` (all their slices: a bag CAM explains the whole bag).
    patients : list of str
        The analysis patients of the map sets.
    cohort_id : str
    """

    model: OutcomeModel
    dev: OutcomeData
    design: np.ndarray
    l2: float
    n_components: int | None
    store: object
    anatomy: object
    patients: list
    cohort_id: str
    key: str


_INPUTS: dict[str, MapInputs] = {}


def _shipped_fit_settings(model: OutcomeModel) -> tuple[float, int | None]:
    if "l2" not in model.card:
        raise ValueError(f"{model.folder / 'card.json'}: no 'l2' (the head's penalty)")
    nc = N_COMPONENTS
    cfg_file = model.folder / "config.json"
    if cfg_file.is_file():
        nc = json.loads(cfg_file.read_text(encoding="utf-8")).get("n_components", nc)
    return float(model.card["l2"]), nc


def default_patients(store) -> list[str]:
    """Patients with at least one lesion pixel in the store's lesion mask (a superset of
    the main study's analysis population: the caller keeps its own population)."""
    if "lesion" not in store.masks:
        raise ValueError(f"slice store {store.path}: no lesion mask; pass patients=")
    m = np.asarray(store.masks["lesion"])
    has = m.reshape(len(m), -1).any(1)
    pid = store.table["participant_id"].astype(str).to_numpy()
    return sorted(set(pid[has]))


def _subset(store, anatomy, patients):
    pid = store.table["participant_id"].astype(str).to_numpy()
    unknown = sorted(set(patients) - set(pid))
    if unknown:
        raise ValueError(f"slice store {store.path} has no slice of patient(s) {unknown[:5]}")
    return _rows(store, anatomy, np.flatnonzero(np.isin(pid, list(patients))))


def _rows(store, anatomy, rows):
    """The store and its anatomy restricted to ``rows`` (in memory)."""
    from hypo.features.anatomy import Anatomy
    from hypo.preprocess import SliceStore

    sub = SliceStore(
        store.path,
        np.asarray(store.images[rows]),
        {k: np.asarray(v[rows]) for k, v in store.masks.items()},
        store.table.iloc[rows].reset_index(drop=True),
        dict(store.meta),
    )
    an = Anatomy(np.asarray(anatomy.labels[rows]), anatomy.table.iloc[rows].reset_index(drop=True),
                 None, anatomy.patients)  # fmt: skip
    return sub, an


class _RowsView:
    """A :class:`hypo.cam.CamStore` seen through some of its rows (what
    :func:`hypo.features.features_for_store` reads: methods, classes, layer, shapes, chunks
    of resized maps)."""

    def __init__(self, cs, rows, chunk: int = 256):
        self.cs, self.rows, self.chunk = cs, np.asarray(rows), chunk
        self.methods, self.classes, self.layer = cs.methods, cs.classes, cs.layer
        self.input_shape, self.raw_shape = cs.input_shape, cs.raw_shape
        self.n_chunks = max(1, -(-len(self.rows) // chunk))

    def iter_chunks(self, method: str, resized: bool = True):
        for start in range(0, len(self.rows), self.chunk):
            stop = min(len(self.rows), start + self.chunk)
            yield start, stop, self.cs.maps(method, self.rows[start:stop], resized=resized)


class _FusedView:
    """LayerCAM maps of several layers fused into one map per slice and class
    (:func:`hypo.cam.fusion.fuse_layer_maps`, one scale per layer over these rows), seen as
    a store of one method (``layercam``) at layer ``fusion`` with the finest layer's cells."""

    def __init__(self, views, method: str = "layercam"):
        from hypo.cam.fusion import FUSION_LAYER, layer_scales

        self.views, self.method = list(views), method
        v0 = self.views[0]
        self.methods, self.classes, self.layer = (method,), v0.classes, FUSION_LAYER
        self.input_shape = v0.input_shape
        self.raw_shape = max((v.raw_shape for v in self.views), key=lambda r: int(np.prod(r)))
        self.n_chunks = v0.n_chunks
        # views are deepest first (DEFAULT_LAYERS order): the first is scaled linearly
        self.scales = layer_scales(
            [(c for _, _, c in v.iter_chunks(method, resized=False)) for v in self.views]
        )

    def iter_chunks(self, method: str, resized: bool = True):
        from hypo.cam.fusion import fuse_layer_maps

        if method != self.method or not resized:
            raise ValueError(f"fused maps exist for {self.method!r} at input size only")
        for parts in zip(*(v.iter_chunks(method, resized=True) for v in self.views)):
            start, stop = parts[0][:2]
            yield start, stop, fuse_layer_maps([p[2] for p in parts], self.scales, deep=0)


def map_inputs(
    outcome_model=OUTCOME_MODEL, analysis=None, dev=None, patients=None, log=None
) -> MapInputs:
    """Load (once per process; cached on disk) what every map set shares.

    Parameters
    ----------
    outcome_model : path
        The shipped outcome model folder (its card fixes encoder, pooling and penalty).
    analysis, dev : path, optional
        Cohort folders (default the synthetic analysis and development cohorts).
    patients : sequence of str, optional
        Analysis patients of the map sets (default :func:`default_patients`).

    Raises ``ValueError`` when the refit of the head on the development cohort's own mRS
    does not reproduce the shipped head (other embeddings or patients than it was fitted
    on): a map set would then not be a replicate of the shipped model.
    """
    import hypo.cohort as hc
    from hypo.features.anatomy import AnatomyConfig, anatomy_for_store
    from hypo.preprocess import PreprocessConfig, build_slice_store

    say = log or (lambda m: None)
    analysis = Path(analysis or default_cohort_dir("analysis"))
    dev = Path(dev or default_cohort_dir("dev"))
    key = stable_hash([str(Path(outcome_model).resolve()), str(analysis.resolve()),
                       str(dev.resolve()), None if patients is None else sorted(map(str, patients)),
                       str(cache_dir())])  # fmt: skip
    if key in _INPUTS:
        return _INPUTS[key]
    t = time.perf_counter()
    model = load_outcome_model(outcome_model)
    l2, nc = _shipped_fit_settings(model)
    groups = tuple(json.loads((Path(outcome_model) / "config.json").read_text()).get(
        "groups", ("stroke",))) if (Path(outcome_model) / "config.json").is_file() else ("stroke",)  # fmt: skip
    ocfg = OutcomeConfig(encoder=str(model.encoder_dir), layer=model.embedding_layer,
                         groups=groups)  # fmt: skip
    dev_data = load_outcome_data(dev, ocfg, model.encoder, say)
    design = pooled_features(dev_data, (model.pooling,))[model.pooling]
    refit = _fit(design, dev_data.y, l2, nc)
    d_eta = np.abs(refit.linear_predictor(design) - model.head.linear_predictor(design)).max()
    if not d_eta <= REFIT_TOLERANCE:
        raise ValueError(
            f"refitting the head of {model.folder} on {dev_data.cohort_id}'s own mRS "
            f"({len(dev_data.y)} patients, pooling {model.pooling}, l2 {l2}, {nc} axes) "
            f"moves eta by up to {d_eta:.3g} (> {REFIT_TOLERANCE}): not the embeddings or "
            "patients the shipped head was fitted on"
        )
    cohort = hc.load(analysis)
    store = build_slice_store(cohort, PreprocessConfig(**model.card["preprocessing"]),
                              progress=False)  # fmt: skip
    anatomy = anatomy_for_store(store, AnatomyConfig(), progress=False, cohort=cohort)
    pats = sorted(map(str, patients)) if patients is not None else default_patients(store)
    sub, an = _subset(store, anatomy, pats)
    say(f"map inputs: {len(dev_data.y)} development patients, {len(pats)} analysis patients "
        f"({len(sub.table)} slices), refit |d eta| {d_eta:.2g}, "
        f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    inp = MapInputs(model, dev_data, design, l2, nc, sub, an, pats, cohort.cohort_id, key)
    _INPUTS[key] = inp
    return inp


def _fit(design, y, l2, nc) -> OrdinalHead:
    return fit_ordinal_head(design, y, l2, LEVELS, penalize=image_penalty(design),
                            n_components=nc)  # fmt: skip


def dev_outcome_covariates(outcome_model=OUTCOME_MODEL, analysis=None, dev=None, patients=None):
    """``(covariates, params, missing)`` of the development patients, in the order
    :func:`outcome_map_features` expects ``dev_mrs``: the generator's outcome covariates
    (:func:`hypo.stats.calibration.outcome_covariates`, one row per analysed development
    patient, index ``participant_id``), its :class:`SynthParams`, and a False mask (every
    analysed development patient has an mRS). Redraw with::

        covs, params, _ = dev_outcome_covariates()
        y = redraw_mrs(covs, "default", rng, params, planted_or_per_sd=2.0)
        features = outcome_map_features(y)
    """
    inp = map_inputs(outcome_model, analysis, dev, patients)
    if inp.dev.covariates is None:
        raise ValueError(f"{inp.dev.cohort_id}: not a synthetic cohort; no outcome covariates")
    return inp.dev.covariates, inp.dev.params, np.zeros(len(inp.dev.y), bool)


def refit_head(inp: MapInputs, dev_mrs=None) -> OrdinalHead:
    """The shipped head's fit (pooling, l2, principal axes) on ``dev_mrs`` (None = the
    development cohort's own mRS)."""
    y = inp.dev.y if dev_mrs is None else np.asarray(dev_mrs)
    if y.shape != inp.dev.y.shape:
        raise ValueError(
            f"dev_mrs has shape {y.shape}; expected ({len(inp.dev.y)},): one mRS per analysed "
            f"patient of {inp.dev.cohort_id}, in dev_outcome_covariates() order"
        )
    if not np.all(np.isin(y, LEVELS)):
        raise ValueError(f"dev_mrs has values outside 0-6: {sorted(set(y.tolist()) - set(LEVELS))}")
    return _fit(inp.design, y.astype(int), inp.l2, inp.n_components)


def _map_set(inp: MapInputs, head: OrdinalHead, layers, methods, root: Path, log):
    from hypo.features.aggregate import aggregate_patients
    from hypo.features.anatomy import AnatomyConfig
    from hypo.features.maps import FeatureConfig, features_for_store

    say = log or (lambda m: None)
    m = inp.model
    fuse = fuses(layers, methods)
    hkey = stable_hash({"head": head.to_dict(), "pooling": m.pooling,
                        "embedding_layer": m.embedding_layer}, 16)  # fmt: skip
    pkey = stable_hash(inp.patients, 8)
    skey = stable_hash(Path(inp.store.path).name, 8)
    key = {"version": MAP_SET_VERSION, "head": hkey, "patients": pkey, "store": skey,
           "layers": list(layers), "methods": list(methods), "features": list(OUTCOME_FEATURES),
           "anatomy": AnatomyConfig().key(), "feature_config": FeatureConfig().__dict__}  # fmt: skip
    if fuse:
        key["fusion"] = "layercam-max-tanh2-layer-scale"
    out_file = root / "map_sets" / f"{hkey}-{stable_hash(key, 12)}.parquet"
    if out_file.is_file():
        return pd.read_parquet(out_file), {}
    suffix = AGGREGATION_SUFFIX[OUTCOME_AGGREGATION]
    table = pd.DataFrame({"participant_id": inp.patients})
    t = time.perf_counter()
    # Methods name the folder too: a store holds the methods it was computed with.
    mtag = "" if tuple(methods) == DEFAULT_METHODS else f"-m{stable_hash(list(methods), 6)}"
    dirs = {la: root / "cams" / f"{la}-{hkey}-p{pkey}-s{skey}{mtag}" for la in layers}
    stores = bag_cam_stores(m.encoder, inp.store, head, m.pooling, dirs, tuple(methods),
                            m.embedding_layer)  # fmt: skip
    t_cam = time.perf_counter() - t
    # The _lesion aggregation reads only lesion slices (and a patient's side only their
    # lesion pixels): features of those slices alone give the same patient values.
    les = np.asarray(inp.store.masks["lesion"])
    rows = np.flatnonzero(les.reshape(len(les), -1).any(1))
    sub, an = _rows(inp.store, inp.anatomy, rows)
    views = [_RowsView(stores[la], rows) for la in layers]
    if fuse:
        views.append(_FusedView(views))
    sf = features_for_store(sub, an, views, controls=(), progress=False)
    pt = aggregate_patients(sf, cohort_id=inp.cohort_id)
    pt["participant_id"] = pt["participant_id"].astype(str)
    cam = pt[(pt["map_source"] == "cam") & (pt["class_index"] == 0)]
    for layer, method in candidates(layers, methods):
        sel = cam[(cam["method"] == method) & (cam["layer"] == layer)]
        sel = sel.set_index("participant_id")
        for f in OUTCOME_FEATURES:
            table[map_column(f, method, layer)] = table["participant_id"].map(sel[f + suffix])
    pid = inp.store.table["participant_id"].astype(str).to_numpy()
    first = pd.Series(np.arange(len(pid))).groupby(pid).first()
    eta = np.asarray(stores[layers[0]].logits)[:, 0]
    table["outcome_eta"] = table["participant_id"].map(
        pd.Series(eta[first.to_numpy()], index=first.index)).astype(float)  # fmt: skip
    seconds = {"layers": list(layers), "cams_s": round(t_cam, 2),
               "features_s": round(time.perf_counter() - t - t_cam, 2)}  # fmt: skip
    say(f"map set {hkey[:8]} {'+'.join(layers)}: CAMs {t_cam:.1f} s (one pass), features "
        f"{seconds['features_s']:.1f} s")  # fmt: skip
    table = table[[c for c in table.columns if c != "outcome_eta"] + ["outcome_eta"]]
    write_table_atomic(out_file, table)
    write_json_atomic(out_file.with_suffix(".json"), {"key": key, "seconds": seconds,
                                                      "head": head.to_dict()})  # fmt: skip
    return table, seconds


def outcome_map_features(
    dev_mrs: np.ndarray | None,
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    methods: Sequence[str] = DEFAULT_METHODS,
    analysis=None,
    dev=None,
    cache_root=None,
    config=None,
    patients=None,
    log=None,
) -> pd.DataFrame:
    """One map set: the outcome head refitted on ``dev_mrs``, its bag CAMs of the analysis
    cohort, and their registered features per analysis patient.

    (a) Only the ordinal head is refitted, on the development cohort's fixed slice
    embeddings pooled as the shipped model pools them, with the shipped penalty (card
    ``l2``) and principal-axes count (``config.json`` ``n_components``); the encoder is
    frozen. A replicate therefore conditions on the development and analysis images, the
    embeddings, the pooling and the penalty; only the development outcomes vary.
    (b) Bag CAMs (:func:`hypo.cam.bag.bag_cam_store`) of every slice of the analysis
    patients with that head, at each layer and method. (c) Features as the main study
    computes them (anatomy, :func:`hypo.features.features_for_store`, map-mass-weighted
    mean over the patient's lesion slices, i.e. the registry's ``_lesion`` aggregation).

    Parameters
    ----------
    dev_mrs : int array (n_dev,) or None
        3-month mRS of the analysed development patients in the order of
        :func:`dev_outcome_covariates` (None = the cohort's own mRS: the shipped head).
    layers, methods : sequences of str
        CAM layers of the encoder (``block5_relu`` = the card's ``cam_layer``, 8 x 8 at 128
        px; ``block4_relu`` 16 x 16; ``block3_relu`` 32 x 32) and methods.
    analysis, dev : path, optional
        Cohort folders (default the synthetic analysis and development cohorts).
    cache_root : path, optional
        Where CAM caches and map-set tables go (default ``cache_dir()/outcome_maps/<analysis
        cohort id>``); both keyed by the hash of the head's coefficients, so a rerun reads
        them and a killed run resumes at the chunk it reached.
    config : path, optional
        The outcome model folder (default ``models/outcome-mil-128``).
    patients : sequence of str, optional
        Analysis patients (default: those with a lesion in the store's lesion mask).

    Returns
    -------
    DataFrame
        One row per analysis patient: ``participant_id``, one column per layer x method x
        feature named ``outcome__<feature>__<method>@<layer>`` (features
        :data:`OUTCOME_FEATURES`, each the ``_lesion`` aggregation), and ``outcome_eta``
        (the head's linear predictor of the patient; higher = worse).
    """
    return outcome_map_set(dev_mrs, layers=layers, methods=methods, analysis=analysis, dev=dev,
                           cache_root=cache_root, config=config, patients=patients,
                           log=log).table  # fmt: skip


@dataclass
class MapSet:
    """One map set: the table of :func:`outcome_map_features`, the refitted head, and the
    seconds this call spent (``cams_s``: every layer in one pass; ``features_s``; an empty
    dict when the map set was read from the cache)."""

    table: pd.DataFrame
    head: OrdinalHead
    seconds: dict


def outcome_map_set(dev_mrs, *, layers=DEFAULT_LAYERS, methods=DEFAULT_METHODS, analysis=None,
                    dev=None, cache_root=None, config=None, patients=None, log=None) -> MapSet:  # fmt: skip
    """:func:`outcome_map_features` with its head and timings (same arguments)."""
    inp = map_inputs(config or OUTCOME_MODEL, analysis, dev, patients, log)
    head = refit_head(inp, dev_mrs)
    root = Path(cache_root) if cache_root is not None else (
        cache_dir() / "outcome_maps" / inp.cohort_id)  # fmt: skip
    table, seconds = _map_set(inp, head, tuple(layers), tuple(methods), root, log)
    return MapSet(table, head, seconds)


#: Covariates the swelling is residualised on before asking what an embedding adds: the
#: generator's versions of the registry's primary covariates.
ENCODER_CHECK_COVARIATES = ("log_lesion_volume_ml_plus_1", "age_per_decade_above_70",
                            "mrs_before", "right_side", "nihss_baseline")  # fmt: skip


def encoder_swelling_information(inp: MapInputs | None = None, folds: int = 5,
                                 seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """How much of the true swelling, beyond the primary covariates, the outcome head's
    inputs carry: a ceiling for every map set.

    On the development patients (synthetic: true swelling known), the swelling is
    residualised on :data:`ENCODER_CHECK_COVARIATES` (least squares), then predicted from
    the head's design (the frozen encoder's pooled slice embeddings and the lesion extent,
    standardised) by ridge regression with its penalty chosen inside each training fold
    (scikit-learn ``RidgeCV``), ``folds``-fold cross-validated. A head refitted on any
    outcome can only use what this design carries: if the out-of-fold prediction does not
    track the residual swelling, no map set of this encoder can measure swelling.

    Returns
    -------
    DataFrame
        ``target, predictors, n, cv_r2, cv_r`` (out-of-fold R^2 and Pearson r), ``folds``:
        the residual swelling from the head's design and from the lesion extent alone (a
        floor), and as a positive control of the check the true infarct volume from the
        head's design.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hypo.stats.calibration import generator_design

    inp = inp or map_inputs()
    if inp.dev.covariates is None:
        raise ValueError(f"{inp.dev.cohort_id}: not a synthetic cohort; no true swelling")
    g = generator_design(inp.dev.covariates)
    C = np.column_stack([np.ones(len(g)), g[list(ENCODER_CHECK_COVARIATES)].to_numpy(float)])
    sw = g["swelling"].to_numpy(float)
    resid = sw - C @ np.linalg.lstsq(C, sw, rcond=None)[0]
    cv = KFold(folds, shuffle=True, random_state=seed)
    rows = []
    design = "encoder embeddings + lesion extent (the head's design)"
    runs = [("swelling beyond the primary covariates", design, inp.design, resid),
            ("swelling beyond the primary covariates", "lesion extent alone",
             inp.design[:, -1:], resid),
            # positive control of the check: what the encoder was trained to see
            ("ln(true infarct volume + 1) (positive control)", design, inp.design,
             g["log_lesion_volume_ml_plus_1"].to_numpy(float))]  # fmt: skip
    for target, name, X, y in runs:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 30)))
        pred = cross_val_predict(model, X, y, cv=cv)
        r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
        r = float(np.corrcoef(pred, y)[0, 1]) if np.std(pred) > 0 else 0.0
        rows.append({"target": target, "predictors": name, "n": len(y), "cv_r2": float(r2),
                     "cv_r": r, "folds": folds})  # fmt: skip
    return pd.DataFrame(rows)
