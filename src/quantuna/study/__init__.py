"""The only package that combines Optuna with measurement.

Bottom to top: :mod:`~quantuna.study.attrs` (every stored key, spelled once),
:mod:`~quantuna.study.storage` and :mod:`~quantuna.study.mutex` (storages, heartbeats, mutual
exclusion over attrs), :mod:`~quantuna.study.sampler` (distinct configs, per-worker seeds),
:mod:`~quantuna.study.session` (the prepared inputs), :mod:`~quantuna.study.baseline`,
:mod:`~quantuna.study.sensitivity` (ranking and warm start), :mod:`~quantuna.study.artifacts`,
:mod:`~quantuna.study.trial` (one trial's life), :mod:`~quantuna.study.run` (the run) and
:mod:`~quantuna.study.workers` (many processes and machines on one study).
"""
