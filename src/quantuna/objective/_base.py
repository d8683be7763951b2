"""The ``Objective`` base class and the registry (Neural Compressor's names and semantics)."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np

logger = logging.getLogger("quantuna.objective")

MIB = 2**20
OBJECTIVES: dict[str, type[Objective]] = {}


def objective_registry(cls: type[Objective]) -> type[Objective]:
    """Class decorator registering ``cls`` in :data:`OBJECTIVES` as ``cls.__name__.lower()``.

    Raises:
        ValueError: If the name is already taken.
    """
    objective_custom_registry(cls.__name__, cls)
    return cls


def objective_custom_registry(name: str, obj_cls: type[Objective]) -> None:
    """Register ``obj_cls`` under ``name.lower()``.

    Raises:
        ValueError: If the name is already taken.
        TypeError: If ``obj_cls`` is not an :class:`Objective` subclass.
    """
    if not (isinstance(obj_cls, type) and issubclass(obj_cls, Objective)):
        raise TypeError(f"objective {name!r} must be an Objective subclass, got {obj_cls!r}")
    if name.lower() in OBJECTIVES:
        raise ValueError(f"Cannot have two objectives with the same name: {name.lower()!r}")
    OBJECTIVES[name.lower()] = obj_cls


def resolve_objective(name_or_ref: str) -> type[Objective]:
    """Return the objective class for a registered name or a ``"package.module:ClassName"``.

    Args:
        name_or_ref: A name in :data:`OBJECTIVES` (any case) or an import reference.

    Raises:
        ValueError: If the name is unknown or the reference is not an importable Objective.

    Example:
        >>> resolve_objective("Performance").__name__
        'Performance'
    """
    if ":" in name_or_ref:
        module_name, _, attr = name_or_ref.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import objective {name_or_ref!r}: {exc}") from exc
        if not (isinstance(found, type) and issubclass(found, Objective)):
            raise ValueError(f"{name_or_ref!r} is {found!r}, not an Objective subclass")
        return found
    try:
        return OBJECTIVES[name_or_ref.lower()]
    except KeyError:
        known = ", ".join(sorted(OBJECTIVES))
        raise ValueError(
            f"unknown objective {name_or_ref!r}; known: {known}; "
            "or give a custom class as 'package.module:ClassName'"
        ) from None


class Objective:
    """Base class: ``start()``/``end()`` wrap a measured region and append one value per cycle.

    Attributes:
        representation: The label; ``str(objective)`` returns it.
        higher_is_better: The direction of the objective (lower is better by default).
        unit: The display unit of a value, e.g. ``"ms"``; ``""`` for a unitless number.
    """

    representation: str = ""
    higher_is_better: bool = False
    unit: str = ""

    def __init__(self) -> None:
        """Create an objective with an empty result list and no model."""
        self._result_list: list[float] = []
        self._model: Any = None

    def reset(self) -> list[float]:
        """Clear the results (called before each trial) and return the empty list."""
        self._result_list = []
        return self._result_list

    def start(self) -> None:
        """Begin measuring a region."""
        raise NotImplementedError

    def end(self) -> None:
        """Finish measuring the region and append one value to ``self._result_list``."""
        raise NotImplementedError

    @property
    def model(self) -> Any:
        """The model being measured."""
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        self._model = model

    def _slice(self, start: int | None, end: int | None) -> list[float]:
        n = len(self._result_list)
        lo = 0 if start is None else min(max(start, 0), n)
        hi = n if end is None else min(max(end, 0), n)
        return self._result_list[lo:hi]

    def result(self, start: int | None = None, end: int | None = None) -> float:
        """Return the mean of ``result_list()[start:end]`` (0.0 if empty).

        Indices are clipped to [0, len] (INC ignores an out-of-range index).

        Args:
            start: First index used, e.g. to skip warm-up cycles.
            end: Index one past the last used.
        """
        values = self._slice(start, end)
        return float(np.mean(values)) if values else 0.0

    def result_list(self) -> list[float]:
        """Return the value of each start/end cycle."""
        return self._result_list

    def __str__(self) -> str:
        """Return :attr:`representation`."""
        return self.representation

