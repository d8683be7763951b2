"""The Python entry points: ``tune()`` and the Neural-Compressor-style ``Quantization`` facade."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantuna.errors import SpecError
from quantuna.results import TuneResult
from quantuna.spec import StudySpec, load_spec
from quantuna.study.run import run_study

if TYPE_CHECKING:
    import onnx
    import optuna


def tune(spec: str | Path | dict[str, Any] | StudySpec, n_trials: int | None = None, **options: Any) -> TuneResult:
    """Run or resume the study a spec describes; see :func:`quantuna.study.run.run_study`.

    Example:
        >>> result = quantuna.tune("studies/digits.yaml", n_trials=40)  # doctest: +SKIP
        >>> result.study.best_trials  # doctest: +SKIP
    """
    return run_study(spec, n_trials=n_trials, **options)


class Quantization:
    """Neural Compressor's tuning loop, on quantuna's study.

    Set the attributes, then call :meth:`fit`::

        q = Quantization("studies/digits.yaml")
        q.model = "model.onnx"
        q.calib_dataloader = batches       # iterable of {input_name: ndarray}
        q.eval_func = my_eval              # callable(onnx.ModelProto) -> float
        q.objective = MyObjective()        # optional custom Objective
        best_model = q.fit()               # onnx.ModelProto; q.study and q.result hold the rest

    Attributes:
        model: the fp32 model path (default: the spec's).
        calib_dataloader: calibration batches (default: the spec's calibration data).
        eval_dataloader: ``(batch, labels)`` pairs (default: the spec's evaluation data).
        eval_func: replaces the spec's accuracy metric.
        objective: an Objective instance, or a list of them, measured besides the spec's.
        pick: the rule that chooses the returned model (see :mod:`quantuna.results`).
    """

    def __init__(self, spec: str | Path | dict[str, Any] | StudySpec, **options: Any) -> None:
        self.spec = load_spec(spec)
        self.options = options
        self.model: str | Path | None = None
        self.calib_dataloader: Iterable[Any] | None = None
        self.eval_dataloader: Iterable[Any] | None = None
        self.eval_func: Callable[[Any], float] | None = None
        self.objective: Any = None
        self.pick = "weighted"
        self.result: TuneResult | None = None

    @property
    def study(self) -> optuna.Study | None:
        """The ``optuna.Study`` of the last :meth:`fit`."""
        return None if self.result is None else self.result.study

    def fit(self, n_trials: int | None = None) -> onnx.ModelProto:
        """Run the study and return the chosen trial's quantized ``onnx.ModelProto``."""
        from quantuna.export import ExportedConfig, apply

        spec = self.spec
        if self.model is not None:
            if not isinstance(self.model, (str, Path)):
                raise SpecError("Quantization.model: give the path of an .onnx file")
            spec = replace(spec, model=Path(self.model).resolve())
        extra = self.objective
        objectives = None if extra is None else (list(extra) if isinstance(extra, (list, tuple)) else [extra])
        self.result = run_study(
            spec,
            n_trials=n_trials,
            eval_func=self.eval_func,
            objectives=objectives,
            calibration=None if self.calib_dataloader is None else list(self.calib_dataloader),
            evaluation=None if self.eval_dataloader is None else list(self.eval_dataloader),
            **self.options,
        )
        chosen = self.result.best(self.pick)
        session = self.result.session
        assert session is not None  # run_study always returns its session
        exported = ExportedConfig(chosen.config, {"batch_size": session.ranges.batch_size}, {})
        return apply(exported, spec.model, calibration=session.calibration)
