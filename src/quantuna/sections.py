"""The spec's ``data`` and ``prepare`` sections (typed, unknown keys refused); see :mod:`quantuna.spec`.

Real signatures: a data source maps each model input to an array of its file (``inputs``), with
the samples on axis 0 unless ``batch_axis`` says otherwise, and feeds ``constants`` unchanged to
every batch (an RNN's initial state, a sample rate).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantuna._util import shorten


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_reference(text: str) -> bool:
    module = r"[A-Za-z_][\w.]*"
    file = r"[\w./~-]+\.py"
    return re.fullmatch(rf"(?:{module}|{file}):[A-Za-z_]\w*", text) is not None


class InputSource(_Strict):
    """``inputs: {INPUT: {key: K, batch_axis: 1}}``: an array whose samples lie on another axis."""

    key: str
    batch_axis: int = Field(default=0, ge=0)


class DataSource(_Strict):
    """One data set: arrays in an ``.npz`` file, or a ``package.module:function`` loader.

    A loader returns an iterable of batches: ``{input_name: ndarray}`` for calibration, and
    ``({input_name: ndarray}, labels)`` pairs for evaluation. ``constants`` maps an input to an
    ``.npz`` key or a number, fed unchanged with every batch.
    """

    path: Path | None = None
    inputs: dict[str, str | InputSource] | None = None
    constants: dict[str, str | int | float] | None = None
    labels: str | None = None
    loader: str | None = None
    size: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.path is None) == (self.loader is None):
            raise ValueError("give exactly one of 'path' (an .npz file) or 'loader' ('pkg.mod:fn')")
        if self.loader is not None and not _is_reference(self.loader):
            raise ValueError(f"loader {shorten(self.loader)} must look like 'package.module:function'")
        both = sorted(set(self.inputs or {}) & set(self.constants or {}))
        if both:
            raise ValueError(f"input {both[0]!r} is in both 'inputs' and 'constants'")
        keys = [k for k, v in (self.constants or {}).items() if isinstance(v, str)]
        if keys and self.loader is not None:
            raise ValueError(f"constants.{keys[0]}: an .npz key needs 'path'; with a loader give a number")
        return self

    def key_of(self, name: str) -> str:
        """The file key that holds input ``name`` (``inputs`` must map it)."""
        value = (self.inputs or {})[name]
        return value if isinstance(value, str) else value.key

    def batch_axis(self, name: str) -> int:
        """The axis that holds the samples of input ``name`` (0 unless ``batch_axis`` says)."""
        value = (self.inputs or {}).get(name)
        return value.batch_axis if isinstance(value, InputSource) else 0

    def inputs_as_plain(self) -> dict[str, object] | None:
        """``inputs`` as plain YAML types (for the export's provenance)."""
        if self.inputs is None:
            return None
        return {k: v if isinstance(v, str) else v.model_dump() for k, v in self.inputs.items()}


class DataSection(_Strict):
    """``data:`` the calibration and evaluation sets."""

    calibration: DataSource
    evaluation: DataSource


class PrepareSection(_Strict):
    """``prepare:`` how the model file is made ready to quantize (see :mod:`quantuna.ort.prepare`)."""

    preprocess: Literal["auto", "on", "off"] = "auto"
    opset: Literal["auto", "keep"] | int = "auto"

    @model_validator(mode="after")
    def _opset_range(self) -> PrepareSection:
        if isinstance(self.opset, int) and not 7 <= self.opset <= 30:
            raise ValueError(f"opset {self.opset} must be auto, keep or a number in [7, 30]")
        return self
