"""Clinical variables, the outcome model and the causal graph of the synthetic cohort.

Outcome model (cumulative logit, the sign convention of ``statsmodels`` ``OrderedModel``
and R ``MASS::polr``; beta > 0 means a *worse*, higher mRS)::

    logit P(mRS_3months <= j) = theta_j - eta - gamma_j * swelling,   j = 0..5
    eta = b_age * (age - 70) / 10 + b_pre * mrs_before + b_female * female
          + b_vol * ln(lesion_volume_ml + 1) + b_right * right_side + b_terr[territory]
          + b_nihss * nihss_baseline + b_ivt * ivt + b_iat * iat

``gamma_j`` is ``ln(or_swelling_per_sd)`` for every j in ``default`` mode (proportional
odds), 0 in ``null`` and ``conditional_null``, and the cut-specific
``nonpo_swelling_log_or`` in ``nonpo`` mode. In ``null`` mode only the non-imaging terms
(age, pre-stroke mRS, sex) are kept: NIHSS and treatment are downstream of the lesion, so
keeping them would make mRS depend on the image; a constant ``null_mode_offset`` replaces
their average contribution so that the marginal mRS distribution stays realistic. ``mrs_3months`` is drawn by inverting the
cumulative probabilities with one uniform per patient.
"""

from __future__ import annotations

import math

import numpy as np

from ..layout import side_right
from .lesions import LesionComponent
from .params import SynthParams
from .territories import VOLUME_LOG_SD, VOLUME_MAX_ML, VOLUME_MEDIAN_ML


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def draw_demographics(rng: np.random.Generator, p: SynthParams) -> dict:
    """Age, sex, diagnosis group, pre-stroke mRS, vascular risk factors, onset time."""
    age = int(
        np.clip(round(p.age_min + p.age_span * rng.beta(p.age_beta_a, p.age_beta_b)), 18, 100)
    )
    sex = "F" if rng.random() < p.female_share else "M"
    group = "stroke" if rng.random() < p.stroke_share else "TIA"
    probs = np.asarray(p.mrs_before_probs, float)
    # Older patients more often carry prior disability.
    shift = np.exp(0.25 * (age - 70) / 10 * np.arange(len(probs)))
    probs = probs * shift / (probs * shift).sum()
    mrs_before = int(rng.choice(len(probs), p=probs))
    a = (age - 60) / 10
    risks = {
        "hypertension": _sigmoid(0.4 + 0.5 * a),
        "diabetes": _sigmoid(-1.5 + 0.15 * a),
        "atrial_fibrillation": _sigmoid(-1.8 + 0.5 * a),
        "smoking": _sigmoid(-1.2 - 0.35 * a),
        "dyslipidemia": _sigmoid(-0.4 + 0.1 * a),
    }
    out = {"age": age, "sex": sex, "group": group, "mrs_before": mrs_before}
    for k, pr in risks.items():
        out[k] = int(rng.random() < pr)
    out["onset_to_imaging_h"] = float(np.clip(round(rng.lognormal(math.log(3.5), 0.9), 1), 0.3, 72))
    return out


def draw_lesion_plan(rng: np.random.Generator, p: SynthParams, group: str) -> dict:
    """Decide whether there is an infarct, where, on which side, and how big.

    Returns a dict with ``components`` (list of :class:`LesionComponent`), ``territory``
    (e.g. ``"MCA"``, ``"MCA+PCA"`` or ``"none"``), ``side`` and ``mislabelled_tia``.
    """
    if group == "TIA":
        if rng.random() >= p.tia_mislabelled_share:
            return {"components": [], "territory": "none", "side": "none", "mislabelled_tia": 0}
        lo, hi = p.tia_mislabelled_volume_ml
        terr = str(rng.choice(["MCA", "deep", "PCA"], p=[0.6, 0.25, 0.15]))
        side = "left" if rng.random() < 0.5 else "right"
        vol = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return {
            "components": [LesionComponent(terr, side, vol)],
            "territory": terr,
            "side": side,
            "mislabelled_tia": 1,
        }
    names = list(p.territory_probs)
    pr = np.asarray([p.territory_probs[n] for n in names], float)
    pr /= pr.sum()
    terr = str(rng.choice(names, p=pr))
    side = "left" if rng.random() < 0.5 else "right"
    vol = float(
        np.clip(
            rng.lognormal(math.log(VOLUME_MEDIAN_ML[terr]), VOLUME_LOG_SD[terr]),
            0.2,
            VOLUME_MAX_ML[terr],
        )
    )
    comps = [LesionComponent(terr, side, vol)]
    territories = [terr]
    sides = {side}
    if terr != "deep" and rng.random() < p.multi_territory_share:
        others = [n for n in ("MCA", "ACA", "PCA") if n != terr]
        t2 = str(rng.choice(others))
        comps.append(LesionComponent(t2, side, max(0.3, 0.3 * vol)))
        territories.append(t2)
    if rng.random() < p.bilateral_share:
        other = "right" if side == "left" else "left"
        t3 = terr if rng.random() < 0.7 else str(rng.choice(["MCA", "PCA", "deep"]))
        comps.append(LesionComponent(t3, other, max(0.2, min(0.3 * vol, VOLUME_MAX_ML[t3]))))
        sides.add(other)
        if t3 not in territories:
            territories.append(t3)
    return {
        "components": comps,
        "territory": "+".join(territories),
        "side": "bilateral" if len(sides) > 1 else side,
        "mislabelled_tia": 0,
    }


def outcome_coefficients(p: SynthParams, mode: str) -> dict:
    """The outcome model's coefficients as used in ``mode`` (log-odds, beta > 0 = worse)."""
    image_free = mode == "null"
    swell_po = math.log(p.or_swelling_per_sd) if mode == "default" else 0.0
    gamma = {
        "default": [swell_po] * 6,
        "null": [0.0] * 6,
        "conditional_null": [0.0] * 6,
        "nonpo": list(p.nonpo_swelling_log_or),
    }[mode]
    z = 0.0 if image_free else None
    return {
        "scale": "log-odds of a worse (higher) mRS; logit P(mRS<=j) = theta_j - eta - gamma_j*swelling",
        "theta": list(p.mrs_thresholds),
        "null_mode_offset": p.null_mode_offset if image_free else 0.0,
        "age_per_decade_above_70": p.beta_age_per_decade,
        "mrs_before": p.beta_mrs_before,
        "female": p.beta_female,
        "log_lesion_volume_ml_plus_1": z if image_free else p.beta_log_volume,
        "right_side": z if image_free else p.beta_right_side,
        "territory": {k: 0.0 for k in p.beta_territory} if image_free else dict(p.beta_territory),
        "nihss_baseline": z if image_free else p.beta_nihss,
        "ivt": z if image_free else p.beta_ivt,
        "iat": z if image_free else p.beta_iat,
        "swelling_per_sd_by_cut": gamma,
        "swelling_or_per_sd": math.exp(gamma[0]) if mode != "nonpo" else None,
        "proportional_odds": mode != "nonpo",
    }


def outcome_linear_predictor(covariates, p: SynthParams, mode: str) -> np.ndarray:
    """The outcome model's linear predictor ``eta`` (without swelling) for many patients.

    The vectorised form of the ``eta`` that :func:`draw_clinical_course` computes, for
    redrawing outcomes of fixed patients (``hypo.stats.calibration``).

    Parameters
    ----------
    covariates : mapping of array-likes (e.g. a DataFrame)
        ``age`` (years), ``sex`` ("F"/"M"), ``mrs_before`` (0-5), ``true_tissue_volume_ml``
        (infarct tissue before swelling, mL; 0 without an infarct), ``side`` ("left",
        "right", "bilateral", "none"), ``territory`` (the truth table's, e.g. "MCA+PCA";
        the first named territory counts; "none" without an infarct), ``nihss_baseline``,
        ``ivt``, ``iat`` (0/1).
    p : SynthParams
    mode : {"default", "null", "conditional_null", "nonpo"}

    Returns
    -------
    ndarray
        ``eta`` per patient (log-odds of a worse mRS).
    """
    need = ("age", "sex", "mrs_before", "true_tissue_volume_ml", "side", "territory",
            "nihss_baseline", "ivt", "iat")  # fmt: skip
    missing = [k for k in need if k not in covariates]
    if missing:
        raise ValueError(f"outcome covariates lack {missing}; expected columns {list(need)}")
    c = outcome_coefficients(p, mode)

    def col(k):
        return np.asarray(covariates[k], dtype=float)

    terr = [str(t).split("+")[0] for t in np.asarray(covariates["territory"], dtype=object)]
    right = side_right(covariates["side"], unknown=0.0)
    female = np.array([str(s).upper() == "F" for s in np.asarray(covariates["sex"])], float)
    return (
        c["null_mode_offset"]
        + c["age_per_decade_above_70"] * (col("age") - 70) / 10
        + c["mrs_before"] * col("mrs_before")
        + c["female"] * female
        + c["log_lesion_volume_ml_plus_1"] * np.log(col("true_tissue_volume_ml") + 1.0)
        + c["right_side"] * right
        + np.array([c["territory"].get(t, 0.0) for t in terr])
        + c["nihss_baseline"] * col("nihss_baseline")
        + c["ivt"] * col("ivt")
        + c["iat"] * col("iat")
    )


def cumulative_mrs_probabilities(eta, swelling, coefficients: dict) -> np.ndarray:
    """``P(mRS <= j)``, j = 0..5, of the cumulative-logit outcome model.

    Parameters
    ----------
    eta, swelling : float or array
        Linear predictor without swelling and swelling (SD units), broadcast together.
    coefficients : dict
        :func:`outcome_coefficients` of the mode (``theta``, ``swelling_per_sd_by_cut``).

    Returns
    -------
    ndarray
        Shape ``broadcast(eta, swelling).shape + (6,)``; non-decreasing along the last axis.
    """
    theta = np.asarray(coefficients["theta"], float)
    gamma = np.asarray(coefficients["swelling_per_sd_by_cut"], float)
    eta = np.asarray(eta, float)
    swelling = np.asarray(swelling, float)
    if eta.ndim or swelling.ndim:
        eta, swelling = (a[..., None] for a in np.broadcast_arrays(eta, swelling))
    cum = 1.0 / (1.0 + np.exp(-(theta - eta - gamma * swelling)))
    # Cut-specific effects (nonpo) can cross; cumulative probabilities must not decrease.
    return np.maximum.accumulate(cum, axis=-1)


def mrs_from_uniform(cum: np.ndarray, u) -> np.ndarray:
    """mRS 0-6 by inverting cumulative probabilities ``cum`` (``(..., 6)``) at uniforms ``u``."""
    return (np.asarray(u, float)[..., None] > cum).sum(axis=-1)


def draw_clinical_course(
    rng: np.random.Generator,
    p: SynthParams,
    demo: dict,
    plan: dict,
    lesion_volume_ml: float,
    swelling: float,
    mode: str,
) -> dict:
    """NIHSS, treatment, mRS at 3 months and follow-up NIHSS for one patient.

    ``lesion_volume_ml`` is the true infarct tissue volume; ``swelling`` the standardised
    swelling factor (0 without an infarct).
    """
    comps = plan["components"]
    terr0 = comps[0].territory if comps else None
    right = float(side_right([plan["side"]], unknown=0.0)[0])
    if demo["group"] == "stroke" and comps:
        log_mu = (
            p.nihss_intercept
            + p.nihss_log_volume_coef * math.log(lesion_volume_ml + 1.0)
            + p.nihss_right_coef * right
            + p.nihss_territory_coef.get(terr0, 0.0)
        )
        mu = math.exp(log_mu)
    else:
        mu = p.tia_nihss_mean
    r = p.nihss_dispersion
    nihss = int(min(42, rng.negative_binomial(r, r / (r + mu))))
    onset = demo["onset_to_imaging_h"]
    if demo["group"] == "stroke":
        p_ivt = _sigmoid(-0.6 + 0.15 * (nihss - 4)) if onset <= p.ivt_window_h else 0.03
        lvo_site = 1.0 if terr0 in ("MCA", "posterior_fossa") else 0.0
        p_iat = _sigmoid(-4.0 + 0.17 * (nihss - 4) + 1.0 * lvo_site) if onset <= 24 else 0.0
    else:
        p_ivt, p_iat = 0.02, 0.0
    ivt = int(rng.random() < p_ivt)
    iat = int(rng.random() < p_iat)

    c = outcome_coefficients(p, mode)
    eta = (
        c["null_mode_offset"]
        + c["age_per_decade_above_70"] * (demo["age"] - 70) / 10
        + c["mrs_before"] * demo["mrs_before"]
        + c["female"] * (demo["sex"] == "F")
        + c["log_lesion_volume_ml_plus_1"] * math.log(lesion_volume_ml + 1.0)
        + c["right_side"] * right
        + (c["territory"].get(terr0, 0.0) if terr0 else 0.0)
        + c["nihss_baseline"] * nihss
        + c["ivt"] * ivt
        + c["iat"] * iat
    )
    gamma = np.asarray(c["swelling_per_sd_by_cut"], float)
    cum = cumulative_mrs_probabilities(eta, swelling, c)
    u = rng.random()
    mrs = int(mrs_from_uniform(cum, u))
    mrs_missing = rng.random() < p.mrs_missing_share

    gain = rng.normal(-0.25 - 0.35 * ivt - 0.5 * iat, 0.45)
    nihss_24h = int(np.clip(round(nihss * math.exp(gain)), 0, 42))
    if mrs == 6:
        nihss_3m = None  # died
    else:
        nihss_3m = int(
            np.clip(round(nihss_24h * math.exp(rng.normal(-0.5, 0.5)) + 0.6 * mrs - 0.5), 0, 42)
        )
    if rng.random() < p.nihss_followup_missing_share:
        nihss_3m = None
    return {
        "nihss_baseline": nihss,
        "ivt": ivt,
        "iat": iat,
        "mrs_3months": None if mrs_missing else mrs,
        "mrs_3months_complete": mrs,
        "nihss_24h": nihss_24h,
        "nihss_3months": nihss_3m,
        "outcome_linear_predictor": float(eta + gamma.mean() * swelling),
    }


def causal_graph(mode: str) -> list[str]:
    """Edges ``"cause -> effect"`` of the generating model in ``mode``."""
    edges = [
        "age -> ventricle_size",
        "age -> mrs_before",
        "age -> hypertension",
        "age -> diabetes",
        "age -> atrial_fibrillation",
        "age -> smoking",
        "age -> dyslipidemia",
        "ventricle_asymmetry -> ventricle_size",
        "group -> true_lesion",
        "true_lesion -> territory",
        "true_lesion -> side",
        "territory -> lesion_volume",
        "lesion_volume -> swelling_latent",
        "swelling -> swelling_latent",
        "swelling_latent -> mass_effect",
        "lesion_volume -> mass_effect",
        "mass_effect -> midline_shift",
        "mass_effect -> ventricle_compression",
        "mass_effect -> sulcal_effacement",
        "lesion_volume -> nihss_baseline",
        "territory -> nihss_baseline",
        "side -> nihss_baseline",
        "group -> nihss_baseline",
        "nihss_baseline -> ivt",
        "onset_to_imaging_h -> ivt",
        "group -> ivt",
        "nihss_baseline -> iat",
        "territory -> iat",
        "onset_to_imaging_h -> iat",
        "nihss_baseline -> nihss_24h",
        "ivt -> nihss_24h",
        "iat -> nihss_24h",
        "nihss_24h -> nihss_3months",
        "mrs_3months -> nihss_3months",
        "true_lesion -> lesion_visible",
        "group -> lesion_visible",
        "age -> mrs_3months",
        "mrs_before -> mrs_3months",
        "sex -> mrs_3months",
    ]
    if mode != "null":
        edges += [
            "lesion_volume -> mrs_3months",
            "side -> mrs_3months",
            "territory -> mrs_3months",
            "nihss_baseline -> mrs_3months",
            "ivt -> mrs_3months",
            "iat -> mrs_3months",
        ]
    if mode in ("default", "nonpo"):
        edges.append("swelling -> mrs_3months")
    return edges
