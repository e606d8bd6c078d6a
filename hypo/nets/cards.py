"""Model cards: the one reader, and the patients a card says its model has seen.

A card (``card.json`` beside ``model.keras``) names the cohort, the train/validation/test
patients, the preprocessing and the CAM layer of a model. Every layer that needs a card
(features, the study, the calibration harness) reads it here, and every leakage check
starts from :func:`seen_patients`. No TensorFlow is needed to read a card.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CARD_FILE", "leaked_patients", "read_card", "seen_patients", "training_patients"]

CARD_FILE = "card.json"


def read_card(card) -> dict:
    """A model card as a dict, from a dict, a model folder, its ``card.json`` or the
    ``.keras`` file beside it."""
    if isinstance(card, dict):
        return card
    p = Path(card)
    if p.is_dir():
        card_file = p / CARD_FILE
    elif p.suffix == ".json":
        card_file = p
    else:
        card_file = p.parent / CARD_FILE
    if not card_file.is_file():
        raise FileNotFoundError(f"{card_file}: no model card (card.json) found for {card}")
    try:
        return json.loads(card_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{card_file}: not valid JSON ({e})") from e


def seen_patients(card) -> set[str]:
    """Training + validation patients of a card (the ones its model must never analyse)."""
    c = read_card(card)
    return {str(p) for p in c.get("train_patients", [])} | {
        str(p) for p in c.get("val_patients", [])
    }


def training_patients(card) -> tuple[str | None, set[str]]:
    """(cohort id, training + validation patient ids) of a card; an error when the card
    does not list them (no leakage guard is possible then)."""
    c = read_card(card)
    for f in ("train_patients", "val_patients"):
        if f not in c:
            raise ValueError(f"model card lacks {f!r}; cannot guard against leakage")
    cohort = c.get("cohort") or {}
    cid = cohort.get("id") if isinstance(cohort, dict) else None
    return cid or c.get("cohort_id"), seen_patients(c)


def leaked_patients(model_card: dict, split_card: dict) -> list[str]:
    """Test patients of ``split_card`` that ``model_card``'s model trained or validated on
    (a model that starts or is probed on another split must have seen none of them)."""
    test = {str(p) for p in read_card(split_card).get("test_patients", [])}
    return sorted(seen_patients(model_card) & test)
