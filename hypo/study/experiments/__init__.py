"""The paper's experiments (section 4) as library code.

One module per experiment, each with a config dataclass (defaults from the paper) and a
``run(settings, config)`` that measures, writes CSV tables, figures, ``report.md`` /
``report.html`` and ``provenance.json``, and returns the paths:

- :mod:`.mirroring` (4.1.1), :mod:`.cropping` (4.1.2), :mod:`.layer_iteration` (4.1.3):
  the maps of a shipped model measured against lesion masks;
- :mod:`.misclassified`, :mod:`.mc_uncertainty`, :mod:`.mrs_model` (4.1, 4.2): what the
  stroke and mRS models get wrong, and how uncertain they are;
- :mod:`.model_debugging` (4.1.4), :mod:`.reproducibility` (4.3), :mod:`.cam3d` (4.4):
  experiments that train their own models (:mod:`.training`, :mod:`.train_models`).

:mod:`.frame` holds what they share: :class:`~.frame.RunSettings` (cohort, model folder,
report folder, quick, seed), :func:`~.frame.open_inputs` (cohort, slice store, model and
the held-out slices) and :func:`~.frame.write_experiment`. ``python -m analyses.<name>`` is
each experiment's command line.
"""
