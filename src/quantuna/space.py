"""``SearchSpace``: the spec's knobs as Optuna parameters, each trial's choices as a ``QuantConfig``.

The space is conditional: when every op type is fp32 the trial is the fp32 model and asks for no
other knob; dynamic quantization asks for no calibration knob; ``percentile`` is asked only for
``Percentile`` calibration, ``smooth_quant_alpha`` only for static trials with
``smooth_quant`` on. Combinations onnxruntime rejects are never offered (dynamic
quantization has uint8 activations only, so ``S8S8`` is not a dynamic choice).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from quantuna.config import WEIGHT_ONLY_OP_TYPES, QuantConfig
from quantuna.errors import SpecError
from quantuna.model import DEFAULT_KNOB_OP_TYPES, ModelInfo
from quantuna.space_weight_only import weight_only_config
from quantuna.spec import SpaceSection

Choose = Callable[[str, Sequence[Any]], Any]


def required_opset(space: SpaceSection) -> int:
    """The opset the space needs: per-channel QDQ needs 13 (``DequantizeLinear``'s ``axis``)."""
    per_channel_qdq = True in space.per_channel and "static" in space.approach and "QDQ" in space.quant_format
    return 13 if per_channel_qdq else 0


class SearchSpace:
    """The knobs of one study, built from ``spec.space`` and the model.

    Args:
        space: the spec's ``space`` section.
        model: the inspected model (its op types decide the default per-op-type knobs).
        calibration_size: the default calibration size (``data.calibration.size``).
        sensitive: (node, op type) pairs, most sensitive first, each given an int8/fp32 knob
            (``node.<name>``); see :meth:`with_sensitive`.
        where: how errors name the spec.

    A space never changes once built: :meth:`with_sensitive` returns a new one.
    """

    def __init__(
        self,
        space: SpaceSection,
        model: ModelInfo,
        calibration_size: int,
        *,
        sensitive: Sequence[tuple[str, str]] = (),
        quantizable: Mapping[str, Collection[str]] | None = None,
        followers: Mapping[str, Collection[str]] | None = None,
        where: str = "spec",
        fused: ModelInfo | None = None,
    ) -> None:
        self._space = space
        self._model = model
        self._fused = fused
        self._calibration_size = calibration_size
        self._quantizable = quantizable
        self._followers = followers or {}
        self._where = where
        self.notes: list[str] = []
        self._distinct: list[tuple[dict[str, Any], QuantConfig]] | None = None
        self._usable_memo: dict[tuple[str, tuple[str, ...]], dict[str, tuple[str, ...]]] = {}
        self.fused_op_knobs = self._fused_knobs(space, fused, where)
        fused_ops = set(fused.op_types) if fused is not None else set()
        all_ops = set(model.op_types) | set(model.subgraph_op_types)
        if space.op_types is None:
            defaults = ("MatMul",) if space.approach == ["weight_only"] else DEFAULT_KNOB_OP_TYPES
            op_knobs = {op: ["int8", "fp32"] for op in defaults if op in all_ops}
        else:
            missing = sorted(set(space.op_types) - all_ops - fused_ops)
            if missing:
                raise SpecError(
                    f"{where}: space.op_types.{missing[0]}: the model has no {missing[0]} node "
                    f"(its op types: {', '.join(model.op_types)}; model preparation may have fused "
                    "it: prepare.preprocess: off keeps the graph as it is)"
                )
            op_knobs = {op: list(dict.fromkeys(v)) for op, v in space.op_types.items()
                        if op in all_ops}
        if not op_knobs and not self.fused_op_knobs:
            raise SpecError(f"{where}: space.op_types: the model has no op type quantuna can quantize")
        self.sensitive: tuple[tuple[str, str], ...] = tuple(sensitive)
        self.calibration_sizes = list(dict.fromkeys(space.calibration_size or [calibration_size]))
        self.dynamic_types = [t for t in space.types if t.startswith("U8")]
        if space.approach == ["dynamic"] and not self.dynamic_types:
            raise SpecError(
                f"{where}: space.types: dynamic quantization has uint8 activations only; "
                f"add U8S8 or U8U8 (got {list(space.types)})"
            )
        self.op_knobs: dict[str, list[str]] = self._reachable(op_knobs)
        if True in space.smooth_quant and "static" not in space.approach:
            self.notes.append("space.smooth_quant: SmoothQuant applies to static quantization "
                              f"only, and the space's approaches are {', '.join(space.approach)}: "
                              "it is never tried (add static to space.approach)")
        if required_opset(space) > model.opset > 0:
            self.notes.append(f"per-channel QDQ needs opset 13, the model has {model.opset}: "
                              "per-channel is offered with QOperator and dynamic only")

    def _modes(self, graph: str = "none") -> list[str]:
        """The ways this space quantizes: ``dynamic``, the static formats (the study's own model
        only, never a fused one) and ``weight_only``."""
        approach = self._space.approach
        modes = ["dynamic"] if "dynamic" in approach and self.dynamic_types else []
        if "static" in approach and graph == "none":
            modes += list(self._space.quant_format)
        return modes + (["weight_only"] if "weight_only" in approach else [])

    def can_quantize(self, mode: str, op: str) -> bool:
        """Whether ``mode`` (``dynamic``, ``QDQ``, ``QOperator``) quantizes some ``op`` node here.

        onnxruntime quantizes inside control-flow bodies only dynamically; QDQ quantizes any op
        type; the others quantize the op types of their registry (``quantizable``).
        """
        if mode == "weight_only":
            return op in WEIGHT_ONLY_OP_TYPES and op not in self._model.subgraph_op_types
        if op in self._model.subgraph_op_types:
            return mode == "dynamic" and self._in_registry(mode, op)
        return self._in_registry(mode, op)

    def _usable_by_mode(self, graph: str, quantized: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """:meth:`_usable` for each mode, kept per (graph, op types): enumerating the space
        builds thousands of configs from a handful of op-type choices."""
        known = self._usable_memo.get((graph, quantized))
        if known is None:
            known = self._usable_memo[(graph, quantized)] = {
                m: self._usable(m, quantized) for m in self._modes(graph)}
        return known

    def _usable(self, mode: str, quantized: Sequence[str]) -> tuple[str, ...]:
        """The op types of ``quantized`` that ``mode`` quantizes; none when all of them only
        follow a quantized neighbour (MaxPool, Reshape... alone quantize nothing)."""
        ops = tuple(op for op in quantized if self.can_quantize(mode, op))
        followers = self._followers.get(mode, ())
        return ops if any(op not in followers for op in ops) else ()

    def _in_registry(self, mode: str, op: str) -> bool:
        if self._quantizable is None or mode not in self._quantizable:
            return True
        return op in self._quantizable[mode]

    def _reachable(self, op_knobs: dict[str, list[str]]) -> dict[str, list[str]]:
        """The op knobs some mode of the space can quantize (the others would only repeat fp32)."""
        modes = self._modes()
        kept = {op: v for op, v in op_knobs.items() if any(self.can_quantize(m, op) for m in modes)}
        dropped = sorted(set(op_knobs) - set(kept))
        if dropped and not kept and self._model.subgraph_op_types:
            self.notes.append(
                "nothing quantizable outside control-flow subgraphs (onnxruntime quantizes If/Loop "
                "bodies dynamically only: add dynamic to space.approach); the study answers fp32"
            )
        elif dropped and not kept:
            raise SpecError(
                f"{self._where}: space.op_types: {', '.join(dropped)}: no node of them can be "
                f"quantized by {', '.join(modes)} in this model"
            )
        elif dropped:
            self.notes.append(f"space.op_types: {', '.join(dropped)} left out: no node of them can "
                              f"be quantized by {', '.join(modes)} in this model")
        return kept

    def _per_channel(self, mode: str) -> list[bool]:
        """Per-channel QDQ needs opset 13 (``DequantizeLinear`` has no ``axis`` before)."""
        if mode == "QDQ" and 0 < self._model.opset < 13:
            return [False]
        return list(self._space.per_channel)

    @staticmethod
    def _fused_knobs(space: SpaceSection, fused: ModelInfo | None, where: str) -> dict[str, list[str]]:
        """The op knobs of the fused model (``graph_optimization: bert``), or none."""
        if space.graph_optimization == ["none"]:
            return {}
        if not set(space.approach) & {"dynamic", "weight_only"}:
            raise SpecError(f"{where}: space.graph_optimization: the fused model is quantized "
                            "dynamic or weight_only; add one of them to space.approach")
        if fused is None:
            raise SpecError(f"{where}: space.graph_optimization: the space needs the fused model")
        if space.op_types is None:
            return {op: ["int8", "fp32"] for op in DEFAULT_KNOB_OP_TYPES if op in fused.op_types}
        return {op: list(dict.fromkeys(v)) for op, v in space.op_types.items()
                if op in fused.op_types}

    # The one place where the knobs are read; `choose` is trial.suggest_categorical or an enumerator.
    def build(self, choose: Choose) -> QuantConfig:
        """Make a config by asking ``choose(name, values)`` for every knob that applies.

        Only combinations that quantize something are offered: an approach or format is asked
        among those that can quantize one of the chosen op types (not only op types that follow
        a quantized neighbour), and the op types it cannot quantize are dropped from the config
        (the same file, one key).
        """
        s = self._space

        def pick(name: str, values: Sequence[Any]) -> Any:
            values = list(dict.fromkeys(values))
            return values[0] if len(values) == 1 else choose(name, values)

        graph = pick("graph_optimization", s.graph_optimization)
        knobs = self.op_knobs if graph == "none" else self.fused_op_knobs
        quantized = tuple(op for op, v in knobs.items() if pick(f"op.{op}", v) == "int8")
        if not quantized:
            return QuantConfig()
        excluded = tuple(
            (node, op)
            for node, op in self.sensitive
            if op in quantized and pick(f"node.{node}", ["int8", "fp32"]) == "fp32"
        )
        usable = self._usable_by_mode(graph, quantized)
        approaches = [a for a in s.approach
                      if any(usable.get(m) for m in (s.quant_format if a == "static" else [a]))]
        if not approaches:
            return QuantConfig()
        approach = pick("approach", approaches)
        first = pick("first_node_fp32", s.first_node_fp32)
        last = pick("last_node_fp32", s.last_node_fp32)
        fused = None if graph == "none" else graph
        if approach == "weight_only":
            return weight_only_config(s, pick, usable["weight_only"], excluded, first, last, fused)
        mode = "dynamic" if approach == "dynamic" else pick(
            "quant_format", [f for f in s.quant_format if usable.get(f)])
        ops = usable[mode]
        common: dict[str, Any] = {
            "op_types": ops,
            "per_channel": pick("per_channel", self._per_channel(mode)),
            "reduce_range": pick("reduce_range", s.reduce_range),
            "weight_symmetric": pick("weight_symmetric", s.weight_symmetric),
            "first_node_fp32": first,
            "last_node_fp32": last,
            "exclude_nodes": tuple(node for node, op in excluded if op in ops),
            "graph_optimization": fused,
        }
        if approach == "dynamic":
            return QuantConfig(
                approach="dynamic", types=pick("dynamic_types", self.dynamic_types), **common
            )
        method = pick("calibrate_method", s.calibrate_method)
        smooth = bool(pick("smooth_quant", s.smooth_quant))
        return QuantConfig(
            approach="static",
            quant_format=mode,
            types=pick("types", s.types),
            activation_symmetric=pick("activation_symmetric", s.activation_symmetric),
            calibrate_method=method,
            percentile=pick("percentile", s.percentile) if method == "Percentile" else None,
            calibration_size=pick("calibration_size", self.calibration_sizes),
            smooth_quant=smooth,
            smooth_quant_alpha=pick("smooth_quant_alpha", s.smooth_quant_alpha) if smooth else None,
            **common,
        )

    def with_sensitive(self, nodes: Sequence[tuple[str, str]]) -> SearchSpace:
        """This space plus an int8/fp32 knob (``node.<name>``) for each (node, op type) pair."""
        return SearchSpace(self._space, self._model, self._calibration_size, sensitive=nodes,
                           quantizable=self._quantizable, followers=self._followers,
                           where=self._where, fused=self._fused)

    def suggest(self, trial: Any) -> QuantConfig:
        """The config of an Optuna trial (``trial.suggest_categorical`` for every open knob)."""
        return self.build(trial.suggest_categorical)

    def enumerate(self) -> Iterator[tuple[dict[str, Any], QuantConfig]]:
        """Every (params, config) of the space, depth first; configs may repeat."""
        stack: list[list[int]] = [[]]
        while stack:
            prefix = stack.pop()
            params, config, branch = self._build_along(prefix)
            for level, count in reversed(branch):
                for alt in range(count - 1, 0, -1):
                    stack.append(prefix + [0] * (level - len(prefix)) + [alt])
            yield params, config

    def _build_along(
        self, prefix: list[int]
    ) -> tuple[dict[str, Any], QuantConfig, list[tuple[int, int]]]:
        """The config whose first choices are ``prefix`` (then the first value of each knob),
        its params, and the (depth, number of values) of each choice past the prefix."""
        params: dict[str, Any] = {}
        branch: list[tuple[int, int]] = []

        def choose(name: str, values: Sequence[Any]) -> Any:
            depth = len(params)
            index = prefix[depth] if depth < len(prefix) else 0
            if depth >= len(prefix):
                branch.append((depth, len(values)))
            params[name] = values[index]
            return values[index]

        return params, self.build(choose), branch

    def params_for(self, config: QuantConfig, *, search: bool = True) -> dict[str, Any] | None:
        """The Optuna params that produce ``config`` (for ``enqueue_trial``), None when it is
        not in the space: found by building it once, each knob asked for the config's own value
        (a config whose values do not rebuild it, such as one whose op types the build drops,
        is searched for in the space's configs, unless ``search`` is False)."""
        params: dict[str, Any] = {}

        def choose(name: str, values: Sequence[Any]) -> Any:
            value = _value_of(config, name)
            params[name] = value if value in values else values[0]
            return params[name]

        if self.build(choose) == config:
            return params
        if not search:
            return None
        return next((p for p, candidate in self.enumerate() if candidate == config), None)

    def distinct(self) -> list[tuple[dict[str, Any], QuantConfig]]:
        """The (params, config) of each distinct config of the space, the first params that make
        it; enumerated once per space (a space never changes), then a copy of that list."""
        if self._distinct is None:
            seen: dict[str, tuple[dict[str, Any], QuantConfig]] = {}
            for params, config in self.enumerate():
                seen.setdefault(config.key(), (params, config))
            self._distinct = list(seen.values())
        return list(self._distinct)

    def distinct_configs(self) -> list[QuantConfig]:
        """The distinct configs of the space (what an exhaustive search would measure)."""
        return [config for _, config in self.distinct()]

    def knobs(self) -> list[tuple[str, list[Any]]]:
        """The knobs and their values, for ``quantuna validate``."""
        s = self._space
        rows: list[tuple[str, list[Any]]] = [(f"op.{op}", v) for op, v in self.op_knobs.items()]
        rows += [(f"op.{op}", v) for op, v in self.fused_op_knobs.items() if op not in self.op_knobs]
        rows += [
            ("approach", list(s.approach)),
            ("quant_format", list(s.quant_format)),
            ("types", list(s.types)),
            ("per_channel", list(s.per_channel)),
            ("reduce_range", list(s.reduce_range)),
            ("activation_symmetric", list(s.activation_symmetric)),
            ("weight_symmetric", list(s.weight_symmetric)),
            ("calibrate_method", list(s.calibrate_method)),
            ("percentile", list(s.percentile)),
            ("calibration_size", self.calibration_sizes),
            ("first_node_fp32", list(s.first_node_fp32)),
            ("last_node_fp32", list(s.last_node_fp32)),
            ("bits", list(s.bits)),
            ("block_size", list(s.block_size)),
            ("accuracy_level", list(s.accuracy_level)),
            ("algorithm", list(s.algorithm)),
            ("graph_optimization", list(s.graph_optimization)),
            ("smooth_quant", list(s.smooth_quant)),
            ("smooth_quant_alpha", list(s.smooth_quant_alpha)),
        ]
        rows += [(f"node.{node}", ["int8", "fp32"]) for node, _ in self.sensitive]
        return rows

    def default_int8(self) -> QuantConfig | None:
        """The first config that quantizes every op type with a knob (a warm start)."""
        for _, config in self.enumerate():
            if not config.is_fp32 and set(config.op_types) == set(self.op_knobs):
                return config
        return None


def _value_of(config: QuantConfig, knob: str) -> Any:
    """The value of ``knob`` (a param name of :meth:`SearchSpace.build`) that ``config`` has."""
    if knob.startswith("op."):
        return "int8" if knob[3:] in config.op_types else "fp32"
    if knob.startswith("node."):
        return "fp32" if knob[5:] in config.exclude_nodes else "int8"
    if knob == "graph_optimization":
        return config.graph_optimization or "none"
    if knob == "dynamic_types":
        return config.types
    if knob == "smooth_quant":
        return bool(config.smooth_quant)
    return getattr(config, knob, None)
