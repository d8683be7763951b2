"""quantuna: search the int8 quantization configurations of an ONNX model with Optuna.

The public API is re-exported here and imported lazily, so ``import quantuna`` stays light:

>>> import quantuna
>>> result = quantuna.tune("studies/digits.yaml", n_trials=40)  # doctest: +SKIP
>>> result.best().config.to_yaml()  # doctest: +SKIP

From your own Optuna code: :class:`StudyObjective` (an objective for ``study.optimize``), and
:func:`search_space`, :func:`suggest_config`, :func:`measure`, :func:`set_accuracy_constraint`
(quantuna's knobs and engine inside your own objective); see the README.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "tune": "quantuna.api",
    "load_results": "quantuna.study.run",
    "run_study": "quantuna.study.run",
    "apply": "quantuna.export",
    "export_trial": "quantuna.export",
    "ExportedConfig": "quantuna.export",
    "Quantization": "quantuna.api",
    "QuantConfig": "quantuna.config",
    "StudySpec": "quantuna.spec",
    "load_spec": "quantuna.spec",
    "TuneResult": "quantuna.results",
    "TrialResult": "quantuna.results",
    "QuantunaError": "quantuna.errors",
    "SpecError": "quantuna.errors",
    "TrialError": "quantuna.errors",
    "StudyObjective": "quantuna.study.objective",
    "DistinctSampler": "quantuna.study.sampler",
    "search_space": "quantuna.study.joint",
    "suggest_config": "quantuna.study.joint",
    "measure": "quantuna.study.joint",
    "set_accuracy_constraint": "quantuna.study.joint",
    "MeasureResult": "quantuna.study.joint",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quantuna' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
