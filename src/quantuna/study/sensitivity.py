"""Sensitivity ranking and the warm start it guides.

Ranking: how much quantizing each compute node *alone* hurts the accuracy metric. One experiment
per node: the study's default int8 config restricted to that node (every other compute node kept
in fp32), evaluated on the first samples of the evaluation set and compared with the fp32 model on
the same samples. The most sensitive nodes get an int8/fp32 knob each
(``space.exclude_sensitive_nodes: K``), and the warm start tries them in fp32 first; with ``auto``
the shortest feasible prefix of the ranking decides K and starts the search
(:mod:`quantuna.study.fallback`). When the calibration data has outliers, the ranking, the
fallback and the warm start's first trial use the outlier-resistant calibration
(:func:`start_config`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import optuna

from quantuna.config import QuantConfig
from quantuna.data import outlier_inputs
from quantuna.errors import SpecError, TrialError
from quantuna.ort.quantize import quantize
from quantuna.ort.session import open_session, output_chunks
from quantuna.study import attrs
from quantuna.study.fallback import Fallback, find_fallback, knob_count
from quantuna.study.mutex import StudyMutex
from quantuna.study.session import Session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeSensitivity:
    """One node's accuracy loss when it alone is quantized (positive = worse), and how far its
    outputs drift from fp32's (mean squared difference over fp32's variance): the per-sample
    score that orders nodes whose metric loss ties (often 0 on a small subset)."""

    node: str
    op_type: str
    loss: float
    drift: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """Plain types, for the study's user attrs."""
        return {"node": self.node, "op_type": self.op_type, "loss": self.loss, "drift": self.drift}


def _outputs(path: Path, s: Session, samples: int) -> np.ndarray:
    subset = s.evaluation.head(samples)
    session = open_session(path, s.spec.measure.accuracy_threads)
    chunks = output_chunks(session, subset, s.eval_batch_size, s.spec.accuracy.output)
    return np.concatenate(list(chunks)).astype(np.float64)


def rank_nodes(session: Session, config: QuantConfig, *, samples: int = 256) -> list[NodeSensitivity]:
    """Rank the compute nodes of ``config``'s op types, most sensitive first (metric loss, then
    output drift).

    Args:
        session: the prepared :class:`~quantuna.study.session.Session`.
        config: the int8 config each experiment restricts to one node.
        samples: how many evaluation samples each experiment uses.
    """
    s = session
    model = s.model
    samples = min(samples, len(s.evaluation))
    labels = s.evaluation.head(samples).labels
    higher = s.metric.higher_is_better
    graph = onnx.load(str(model.path), load_external_data=False).graph
    op_of = {n.name: n.op_type for n in graph.node}
    candidates = [n for n in model.compute_nodes if op_of[n] in config.op_types]
    with tempfile.TemporaryDirectory(prefix="quantuna-sensitivity-") as tmp:
        fp32 = _outputs(model.path, s, samples)
        reference = float(s.metric.fn(fp32, labels))
        scale = float(np.var(fp32)) or 1.0
        ranges = s.ranges.get(config).path if config.approach == "static" else None
        ranking = []
        for node in candidates:
            others = tuple(n for n in candidates if n != node)
            single = replace(config, op_types=(op_of[node],), exclude_nodes=others,
                             first_node_fp32=False, last_node_fp32=False)
            try:
                path = quantize(model, single, Path(tmp) / "node.onnx", ranges=ranges)
                outputs = _outputs(path, s, samples)
                value = float(s.metric.fn(outputs, labels))
            except TrialError as exc:
                logger.warning("sensitivity of %s not measured: %s", node, exc)
                continue
            loss = reference - value if higher else value - reference
            drift = float(np.mean((outputs - fp32) ** 2)) / scale if outputs.shape == fp32.shape else 0.0
            ranking.append(NodeSensitivity(node, op_of[node], float(loss), drift))
    ranking.sort(key=lambda r: (-r.loss, -r.drift, candidates.index(r.node)))
    return ranking


def ensure_sensitivity(study: optuna.Study, session: Session) -> Session:
    """Rank the nodes once per study (kept in its user attrs); the session whose space gives the
    top K a knob each (the same session when the spec asks for none). With ``auto``, K is the
    shortest feasible prefix of the ranking (:mod:`quantuna.study.fallback`) plus its neighbours.
    Workers that start together take the study's ``sensitivity`` mutex: one ranks, the others
    read what it stored."""
    k = session.spec.space.exclude_sensitive_nodes
    if not k:
        return session
    default = start_config(session)
    wanted = [attrs.SENSITIVITY] + ([attrs.FALLBACK] if k == "auto" else [])

    def done() -> bool:
        return all(key in study.user_attrs for key in wanted)

    if default is not None and not done():
        mutex = StudyMutex(study, attrs.SENSITIVITY)
        if mutex.acquire(give_up=done):
            try:
                _store_ranking(study, session, default, k == "auto")
            finally:
                mutex.release()
    ranking = study.user_attrs.get(attrs.SENSITIVITY)
    if ranking is None:
        return session
    if k == "auto":
        stored = study.user_attrs.get(attrs.FALLBACK)
        k = knob_count(Fallback.from_dict(stored) if stored else Fallback(0, ()), len(ranking))
    nodes = [(r["node"], r["op_type"]) for r in ranking[:k]]
    return replace(session, space=session.space.with_sensitive(nodes))


def _store_ranking(study: optuna.Study, session: Session, default: QuantConfig, auto: bool) -> None:
    ranking = study.user_attrs.get(attrs.SENSITIVITY)
    if ranking is None:
        logger.info("ranking node sensitivity")
        try:
            ranked = rank_nodes(session, default, samples=session.spec.space.sensitivity_samples)
        except TrialError as exc:
            raise SpecError(f"{session.spec.where}: sensitivity ranking failed: {exc}") from None
        ranking = [r.to_dict() for r in ranked]
        study.set_user_attr(attrs.SENSITIVITY, ranking)
    if auto:
        _ensure_fallback(study, session, default, ranking)


def _ensure_fallback(study: optuna.Study, session: Session, default: QuantConfig | None,
                     ranking: list[dict[str, object]]) -> Fallback:
    stored = study.user_attrs.get(attrs.FALLBACK)
    if stored is not None:
        return Fallback.from_dict(stored)
    if default is None or attrs.BASELINE not in study.user_attrs:
        return Fallback(0, ())
    target = study.user_attrs[attrs.BASELINE]["accuracy_target"]
    fallback = find_fallback(session, default, [str(r["node"]) for r in ranking], target)
    study.set_user_attr(attrs.FALLBACK, fallback.to_dict())
    return fallback


def warm_start_configs(session: Session, fallback: Fallback | None = None, *,
                       spread: bool = False) -> list[QuantConfig]:
    """The configs tried first. With a ``fallback`` (``auto``): the default int8 config with the
    fallback's prefix in fp32 (known feasible). Otherwise: the default int8 config, then it with
    the most sensitive node (and then all K sensitive nodes) in fp32. Then fp32, then (with
    ``spread``) :func:`spread_configs`. The default config is in the format of the smaller file
    when the model size is an objective (:func:`smaller_format`). When the calibration data has outliers
    (:func:`~quantuna.data.outlier_inputs`), the first config is calibrated with
    :func:`robust_calibration` instead."""
    default = session.space.default_int8()
    if default is None:
        return [QuantConfig()]
    default = smaller_format(session, default)
    if fallback is not None:
        first = replace(default, exclude_nodes=fallback.nodes)
        configs = [first, QuantConfig(), *(spread_configs(session, first) if spread else [])]
        return _robust_first(session, configs)
    configs = [default]
    sensitive = [node for node, _ in session.space.sensitive]
    if sensitive:
        configs.append(replace(default, exclude_nodes=(sensitive[0],)))
        if len(sensitive) > 1:
            configs.append(replace(default, exclude_nodes=tuple(sensitive)))
    configs += [QuantConfig(), *(spread_configs(session, default) if spread else [])]
    return _robust_first(session, configs)


def smaller_format(session: Session, config: QuantConfig) -> QuantConfig:
    """``config`` in QOperator when the model size is one of the study's objectives and the space
    offers ``config`` in that format (same op types): QOperator files hold no DequantizeLinear per
    weight and bias and no Q/DQ pair per quantized tensor, so they are smaller for the same int8
    weights (studies/benchmarks/RESULTS.md, figure 8). Otherwise ``config``.

    Only a config the space builds (:meth:`SearchSpace.params_for`), else the warm start would
    skip it."""
    if ("modelsize" not in session.objective_names or config.approach != "static"
            or config.quant_format == "QOperator"):
        return config
    wanted = replace(config, quant_format="QOperator")
    return wanted if session.space.params_for(wanted, search=False) is not None else config


def start_config(session: Session) -> QuantConfig | None:
    """The config the ranking and the fallback restrict: the default int8 config, calibrated
    with :func:`robust_calibration` when the calibration data has outliers (a stretched MinMax
    range would otherwise blame, and keep in fp32, the nodes it hurts)."""
    default = session.space.default_int8()
    if default is None or not outlier_inputs(session.calibration):
        return default
    return robust_calibration(session, default) or default


def _robust_first(session: Session, configs: list[QuantConfig]) -> list[QuantConfig]:
    """``configs`` led by the first one robustly calibrated, when the calibration data has
    outliers (then MinMax ranges are stretched by a few samples)."""
    robust = robust_calibration(session, configs[0])
    if robust is None or not outlier_inputs(session.calibration):
        return configs
    return [robust, *configs]


def robust_calibration(session: Session, start: QuantConfig) -> QuantConfig | None:
    """``start`` (static MinMax) with the space's outlier-resistant calibration: ``MovingAverage``
    (measured to pay on the digits example with 2 % of its calibration images x50, where
    Percentile 99.99/99.999 and Entropy do not: studies/benchmarks/RESULTS.md, figure 8), else
    the lowest ``Percentile``, else ``Entropy``; ``None`` when the space has none."""
    methods = session.spec.space.calibrate_method
    if start.approach != "static" or start.calibrate_method != "MinMax":
        return None
    if "MovingAverage" in methods:
        return replace(start, calibrate_method="MovingAverage")
    if "Percentile" in methods:
        return replace(start, calibrate_method="Percentile", percentile=min(session.spec.space.percentile))
    if "Entropy" in methods:
        return replace(start, calibrate_method="Entropy")
    return None


def spread_configs(session: Session, start: QuantConfig) -> list[QuantConfig]:
    """``start`` with an outlier-resistant calibration (:func:`robust_calibration`), then in the
    space's other static format (QDQ <-> QOperator: a different file size and other kernels),
    then with one op type alone int8 for each op type with a knob: the points a search otherwise
    finds late (bad calibration data; the format that is smaller or faster on this CPU; fronts
    whose ends quantize one op type). Configs outside the space are skipped when enqueued."""
    space = session.spec.space
    robust = robust_calibration(session, start)
    configs = [] if robust is None else [robust]
    if start.approach == "static":
        configs += [replace(start, quant_format=f) for f in space.quant_format if f != start.quant_format][:1]
    knobs = [op for op, values in session.space.op_knobs.items() if "fp32" in values]
    if len(start.op_types) > 1:
        op_of = dict(session.space.sensitive)
        for op in knobs:
            if op in start.op_types:
                excluded = tuple(n for n in start.exclude_nodes if op_of.get(n) == op)
                configs.append(replace(start, op_types=(op,), exclude_nodes=excluded))
    return configs


SPREAD_BUDGET = 10  # studies of at least this many trials also start with spread_configs


def enqueue_warm_start(study: optuna.Study, session: Session, budget: int | None = None) -> None:
    """Enqueue the warm-start configs on a study that has no trial yet (the space is enumerated
    once for all of them). With a ``budget`` of at least :data:`SPREAD_BUDGET` trials, the
    :func:`spread_configs` follow; never more configs than the budget (no trial left waiting).

    Under a study lock: several ``quantuna run`` started at once on one storage each found the
    study empty and enqueued the warm start again (``skip_if_exists`` checks, then inserts), so
    the configs ran two or three times and the repeats spent the budget."""
    with StudyMutex(study, "warm-start"):
        if not study.get_trials(deepcopy=False):
            _enqueue_warm_start(study, session, budget)


def _enqueue_warm_start(study: optuna.Study, session: Session, budget: int | None) -> None:
    stored = study.user_attrs.get(attrs.FALLBACK)
    fallback = Fallback.from_dict(stored) if stored is not None else None
    spread = budget is not None and budget >= SPREAD_BUDGET
    wanted = list(dict.fromkeys(warm_start_configs(session, fallback, spread=spread)))
    if spread:
        wanted = wanted[:budget]
    # each config's params by building it once (enumerating the space to find them took most of
    # the time before the first trial on large spaces); the space's configs are searched once,
    # for the configs their own values do not rebuild
    found = {config.key(): session.space.params_for(config, search=False) for config in wanted}
    missing = {key for key, params in found.items() if params is None}
    if missing:
        found.update({c.key(): p for p, c in session.space.distinct() if c.key() in missing})
    for config in wanted:
        params = found.get(config.key())
        if params is not None:
            study.enqueue_trial(params, skip_if_exists=True)
