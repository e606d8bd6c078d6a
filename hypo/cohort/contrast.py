"""The image contrast of a cohort's volumes, and what it means for the anatomy.

A cohort declares its contrast in one of two places, read by :meth:`hypo.cohort.Cohort.
contrast_of`: a ``contrast`` column of ``participants.tsv`` (per patient; importers write
it), or, for a synthetic cohort, ``generator.json``'s ``contrast`` (absent: ``b1000``, the
only contrast the generator rendered before it had the option). Without a declaration the
anatomy detects the CSF's polarity from the image and writes what it found to its output.

=========  ====================================  =====  ============
name       what                                  CSF    infarct
=========  ====================================  =====  ============
b1000      DWI, b = 1000 s/mm^2 (or trace)       dark   bright
b0         DWI, b = 0 (T2-weighted EPI)          bright (faint)
adc        apparent diffusion coefficient map    bright dark
t2         T2-weighted                           bright bright
flair      T2-FLAIR                              dark   bright
epi        T2*-weighted EPI (fMRI, perfusion)    bright (faint)
=========  ====================================  =====  ============
"""

from __future__ import annotations

#: name -> (CSF polarity, infarct polarity or None where the contrast barely shows it).
CONTRASTS = {
    "b1000": ("dark", "bright"),
    "b0": ("bright", None),
    "adc": ("bright", "dark"),
    "t2": ("bright", "bright"),
    "flair": ("dark", "bright"),
    "epi": ("bright", None),
}
#: Other spellings importers and users write, and the name they mean.
ALIASES = {"dwi": "b1000", "trace": "b1000", "trace_dwi": "b1000", "t2w": "t2", "swi": None}
#: What the anatomy writes when nothing was declared: only the CSF's polarity is detected.
DETECTED = {"dark": "detected-csf-dark", "bright": "detected-csf-bright"}


def normalise_contrast(value, where: str) -> str:
    """The canonical contrast name of ``value``; ``where`` names the file and column.

    Raises
    ------
    ValueError
        For an unknown or unsupported contrast, naming ``where`` and the accepted names.
    """
    v = str(value).strip().lower()
    v = ALIASES.get(v, v)
    if v not in CONTRASTS and v not in DETECTED.values():
        raise ValueError(
            f"{where}: contrast {value!r} is not one hypo's anatomy knows; expected one of "
            f"{sorted(CONTRASTS)} (or {sorted(k for k, a in ALIASES.items() if a)})"
        )
    return v


def csf_polarity(contrast: str) -> str:
    """``"dark"`` or ``"bright"``: how CSF looks against brain tissue in ``contrast``."""
    if contrast in DETECTED.values():
        return "dark" if contrast == DETECTED["dark"] else "bright"
    return CONTRASTS[normalise_contrast(contrast, "contrast")][0]


def lesion_polarity(contrast: str) -> str | None:
    """``"bright"``, ``"dark"`` or None (the contrast barely shows an acute infarct).

    A detected contrast is read as CSF-dark = DWI b1000 (bright infarct) and CSF-bright =
    b0-like (no infarct detection): an undeclared ADC map's dark infarct is not sought.
    """
    if contrast in DETECTED.values():
        return "bright" if contrast == DETECTED["dark"] else None
    return CONTRASTS[normalise_contrast(contrast, "contrast")][1]
