"""Objectives with Intel Neural Compressor's API, measured truthfully.

The names and semantics follow ``neural_compressor/objective.py`` (2.x) so that code written for
INC ports by changing the import; docs/objectives.md lists where quantuna measures differently.
This package imports neither optuna nor onnxruntime.
"""

from quantuna.objective._base import (
    MIB,
    OBJECTIVES,
    Objective,
    objective_custom_registry,
    objective_registry,
    resolve_objective,
)
from quantuna.objective._builtins import (
    Accuracy,
    Footprint,
    ModelSize,
    Performance,
    model_size_bytes,
)
from quantuna.objective._criteria import (
    DEFAULT_RELATIVE,
    RATIO_CAP,
    RATIO_FLOOR,
    accuracy_constraint,
    accuracy_target,
    equal_weights,
    weighted_metric,
    weighted_ratio_score,
)
from quantuna.objective._multi import BestResult, MultiObjective

__all__ = [
    "DEFAULT_RELATIVE",
    "MIB",
    "OBJECTIVES",
    "RATIO_CAP",
    "RATIO_FLOOR",
    "Accuracy",
    "BestResult",
    "Footprint",
    "ModelSize",
    "MultiObjective",
    "Objective",
    "Performance",
    "accuracy_constraint",
    "accuracy_target",
    "equal_weights",
    "model_size_bytes",
    "objective_custom_registry",
    "objective_registry",
    "resolve_objective",
    "weighted_metric",
    "weighted_ratio_score",
]
