"""Synthetic stroke DWI cohort: MNI152-based anatomy, territorial infarcts, swelling, outcomes.

Entry points: :func:`generate_cohort` (writes a cohort in the :mod:`hypo.cohort.layout`
layout), :func:`synthesize_patient` (one patient in memory) and :class:`SynthParams`.
"""

from .generator import generate_cohort, participant_id, synthesize_patient
from .params import MODES, SynthParams

__all__ = ["MODES", "SynthParams", "generate_cohort", "participant_id", "synthesize_patient"]
