"""Builders of tiny cohorts on disk for tests (any test module may import these).

``make_tiny_cohort(tmp_path)`` writes a valid cohort in the hypo layout from NumPy arrays
with nibabel, small enough that a whole test file using it runs in seconds::

    from tests.helpers import make_tiny_cohort

    root = make_tiny_cohort(tmp_path, n_patients=4, masks=True, slice_labels=True)
    cohort = hypo.cohort.load(root)
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from hypo.cohort import layout

#: Default grid of tiny volumes: (x, y, z) voxels and voxel size in mm.
TINY_SHAPE = (20, 24, 8)
TINY_ZOOMS = (2.0, 2.0, 5.0)


def canonical_affine(shape=TINY_SHAPE, zooms=TINY_ZOOMS) -> np.ndarray:
    """RAS+ affine with the given voxel size (mm), centred on the volume."""
    aff = np.diag([*map(float, zooms), 1.0])
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.asarray(zooms, float)
    return aff


def tiny_volume(
    shape=TINY_SHAPE, *, seed: int = 0, lesion: bool = True, lesion_side: str = "left"
) -> tuple[np.ndarray, np.ndarray]:
    """A canonical (RAS+) head-like volume and its lesion mask.

    Returns ``(data, mask)``: float32 intensities (background 0, brain about 100, lesion
    about 300) and a uint8 mask. The lesion sits in the patient's ``lesion_side``
    hemisphere (low x = left in RAS+) on the middle slices.
    """
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = (x**2 / 0.8**2 + y**2 / 0.85**2 + z**2 / 1.1**2) <= 1.0
    data = np.where(brain, 100.0 + rng.normal(0, 5, shape), 0.0)
    mask = np.zeros(shape, np.uint8)
    if lesion:
        cx = -0.45 if lesion_side == "left" else 0.45
        blob = ((x - cx) ** 2 + (y - 0.1) ** 2) <= 0.25**2
        blob &= np.abs(z) <= 0.45
        mask[blob & brain] = 1
        data[mask > 0] = 300.0 + rng.normal(0, 5, int(mask.sum()))
    return data.astype(np.float32), mask


def reorient(data: np.ndarray, affine: np.ndarray, axcodes) -> tuple[np.ndarray, np.ndarray]:
    """Store a canonical array in another voxel order, with the affine that describes it.

    Uses nibabel's orientation tools, so loading the result with ``to_canonical`` must
    give back ``data`` and ``affine`` exactly.
    """
    ras = nib.orientations.axcodes2ornt(nib.aff2axcodes(affine))
    target = nib.orientations.axcodes2ornt(tuple(axcodes))
    transform = nib.orientations.ornt_transform(ras, target)
    new_data = nib.orientations.apply_orientation(data, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(new_data), new_affine


def write_nifti(path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` as a NIfTI file (folders created), keeping the array's dtype."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.header.set_data_dtype(np.asarray(data).dtype)
    nib.save(img, path)
    return path


def make_tiny_cohort(
    tmp_path,
    n_patients: int = 3,
    *,
    name: str = "tiny",
    shape=TINY_SHAPE,
    zooms=TINY_ZOOMS,
    dtype: str = "float32",
    axcodes: str = "RAS",
    masks: bool = True,
    slice_labels: bool = False,
    synthetic: bool = False,
    seed: int = 0,
) -> Path:
    """Write a small valid cohort in the hypo layout and return its folder.

    Patients ``sub-001 ...``; even indices are ``stroke`` (lesion in the left hemisphere),
    odd ones ``TIA`` (no lesion, all-zero mask). Clinical columns: age, sex, group,
    mrs_before, nihss_baseline, mrs_3months (the last patient's 3-month mRS is n/a).

    Parameters
    ----------
    tmp_path : path-like
        Parent folder; the cohort goes to ``tmp_path / name``.
    dtype : {'float32', 'int16', 'uint8'}
        Storage type of the DWI (uint8 is stored as 0-255 grey values).
    axcodes : str
        Voxel order on disk, e.g. ``"LPS"`` or ``"PIR"``; data are identical once canonical.
    masks, slice_labels, synthetic : bool
        Also write lesion masks, a reader slice_labels.tsv (from the masks, slices with any
        lesion voxel), and the synthetic extras (generator.json, derivatives/truth/).
    """
    root = Path(tmp_path) / name
    root.mkdir(parents=True)
    affine = canonical_affine(shape, zooms)
    rows, label_rows, truth_rows = [], [], []
    for i in range(n_patients):
        pid = f"sub-{i + 1:03d}"
        stroke = i % 2 == 0
        data, mask = tiny_volume(shape, seed=seed * 1000 + i, lesion=stroke)
        if dtype == "int16":
            data = np.rint(data * 10).astype(np.int16)
        elif dtype == "uint8":
            data = np.clip(np.rint(data * 255.0 / 320.0), 0, 255).astype(np.uint8)
        else:
            data = data.astype(dtype)
        stored, stored_aff = reorient(data, affine, axcodes)
        write_nifti(layout.dwi_path(root, pid), stored, stored_aff)
        if masks:
            m, m_aff = reorient(mask, affine, axcodes)
            write_nifti(layout.lesion_mask_path(root, pid), m, m_aff)
        if synthetic:
            m, m_aff = reorient(mask, affine, axcodes)
            write_nifti(layout.truth_mask_path(root, pid, "lesion"), m, m_aff)
            b, b_aff = reorient((data > 0).astype(np.uint8), affine, axcodes)
            write_nifti(layout.truth_mask_path(root, pid, "brain"), b, b_aff)
            truth_rows.append({"participant_id": pid, "lesion_volume_ml": mask.sum() * 0.02})
        for k in range(shape[2]):
            label_rows.append(
                {"participant_id": pid, "slice": k, "lesion_visible": int(mask[:, :, k].any())}
            )
        rows.append(
            {
                "participant_id": pid,
                "age": 60 + i,
                "sex": "F" if i % 3 == 0 else "M",
                "group": "stroke" if stroke else "TIA",
                "mrs_before": 0,
                "nihss_baseline": 4 + i if stroke else 1,
                "mrs_3months": (i % 7) if i < n_patients - 1 else np.nan,
            }
        )
    pd.DataFrame(rows).to_csv(root / layout.PARTICIPANTS, sep="\t", index=False, na_rep="n/a")
    if slice_labels:
        pd.DataFrame(label_rows).to_csv(root / layout.SLICE_LABELS, sep="\t", index=False)
    if synthetic:
        (root / layout.GENERATOR).write_text(json.dumps({"seed": seed, "n": n_patients}))
        pd.DataFrame(truth_rows).to_csv(root / layout.TRUTH_TABLE, sep="\t", index=False)
    return root


def tiny_model(arch: str, classes, out, cohort: dict, train=(), val=(), *, seed=None, tune=None):
    """A 64 px model of ``arch`` fitted one epoch on seeded noise, saved to ``out`` with a
    card (``cohort``, training/validation patients ``train``/``val``).

    ``tune(model)`` runs after fitting (e.g. to make the model mirror-equivariant or to
    shift its biases); ``seed`` goes to :func:`hypo.nets.architectures.build_model`.
    Returns the model folder.
    """
    import keras

    from hypo.nets.architectures import build_model
    from hypo.nets.io import make_card, save_model

    keras.utils.set_random_seed(0)
    model = build_model(arch, input_shape=(64, 64, 1), n_classes=len(classes), seed=seed)
    x = np.random.default_rng(0).normal(size=(8, 64, 64, 1)).astype("float32")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(8) % len(classes), epochs=1, batch_size=8, verbose=0)
    if tune is not None:
        tune(model)
    card = make_card(arch, model, classes, cohort=cohort, preprocessing={"size": 64})
    card["train_patients"], card["val_patients"] = list(train), list(val)
    return save_model(model, out, card)


def isolate_hypo(mp, root) -> None:
    """Point ``HYPO_DATA`` and ``HYPO_CACHE`` (monkeypatch ``mp``) into ``root``, so a test
    neither reads nor leaves state in the user's folders; TensorFlow logs quietly."""
    mp.setenv("HYPO_DATA", str(Path(root) / "data"))
    mp.setenv("HYPO_CACHE", str(Path(root) / "cache"))
    mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
