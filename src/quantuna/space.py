"""``SearchSpace``: the spec's knobs as Optuna parameters, each trial's choices as a ``QuantConfig``.

The space is conditional: when every op type is fp32 the trial is the fp32 model and asks for no
other knob; dynamic quantization asks for no calibration knob; ``percentile`` is asked only for
``Percentile`` calibration. Combinations onnxruntime rejects are never offered (dynamic
quantization has uint8 activations only, so ``S8S8`` is not a dynamic choice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from quantuna.config import WEIGHT_ONLY_OP_TYPES, QuantConfig
from quantuna.errors import SpecError
from quantuna.model import DEFAULT_KNOB_OP_TYPES, ModelInfo
from quantuna.spec import SpaceSection

Choose = Callable[[str, Sequence[Any]], Any]


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
        where: str = "spec",
        fused: ModelInfo | None = None,
    ) -> None:
        self._space = space
        self._model = model
        self._fused = fused
        self._calibration_size = calibration_size
        self._where = where
        self.fused_op_knobs = self._fused_knobs(space, fused, where)
        fused_ops = set(fused.op_types) if fused is not None else set()
        if space.op_types is None:
            defaults = ("MatMul",) if space.approach == ["weight_only"] else DEFAULT_KNOB_OP_TYPES
            op_knobs = {op: ["int8", "fp32"] for op in defaults if op in model.op_types}
        else:
            missing = sorted(set(space.op_types) - set(model.op_types) - fused_ops)
            if missing:
                raise SpecError(
                    f"{where}: space.op_types.{missing[0]}: the model has no {missing[0]} node "
                    f"(its op types: {', '.join(model.op_types)})"
                )
            op_knobs = {op: list(dict.fromkeys(v)) for op, v in space.op_types.items()
                        if op in model.op_types}
        if not op_knobs and not self.fused_op_knobs:
            raise SpecError(f"{where}: space.op_types: the model has no op type quantuna can quantize")
        self.op_knobs: dict[str, list[str]] = op_knobs
        self.sensitive: tuple[tuple[str, str], ...] = tuple(sensitive)
        self.calibration_sizes = list(dict.fromkeys(space.calibration_size or [calibration_size]))
        self.dynamic_types = [t for t in space.types if t.startswith("U8")]
        if space.approach == ["dynamic"] and not self.dynamic_types:
            raise SpecError(
                f"{where}: space.types: dynamic quantization has uint8 activations only; "
                f"add U8S8 or U8U8 (got {list(space.types)})"
            )

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
        """Make a config by asking ``choose(name, values)`` for every knob that applies."""
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
            node
            for node, op in self.sensitive
            if op in quantized and pick(f"node.{node}", ["int8", "fp32"]) == "fp32"
        )
        approaches = [a for a in s.approach
                      if (a != "static" or graph == "none")  # static: the study's own model
                      and (a != "dynamic" or self.dynamic_types)
                      and (a != "weight_only" or set(quantized) & set(WEIGHT_ONLY_OP_TYPES))]
        if not approaches:  # only weight_only, and no op type it takes is quantized
            return QuantConfig()
        approach = pick("approach", approaches)
        first = pick("first_node_fp32", s.first_node_fp32)
        last = pick("last_node_fp32", s.last_node_fp32)
        fused = None if graph == "none" else graph
        if approach == "weight_only":
            return self._weight_only(pick, quantized, excluded, first, last, fused)
        common: dict[str, Any] = {
            "op_types": quantized,
            "per_channel": pick("per_channel", s.per_channel),
            "reduce_range": pick("reduce_range", s.reduce_range),
            "weight_symmetric": pick("weight_symmetric", s.weight_symmetric),
            "first_node_fp32": first,
            "last_node_fp32": last,
            "exclude_nodes": excluded,
            "graph_optimization": fused,
        }
        if approach == "dynamic":
            return QuantConfig(
                approach="dynamic", types=pick("dynamic_types", self.dynamic_types), **common
            )
        method = pick("calibrate_method", s.calibrate_method)
        return QuantConfig(
            approach="static",
            quant_format=pick("quant_format", s.quant_format),
            types=pick("types", s.types),
            activation_symmetric=pick("activation_symmetric", s.activation_symmetric),
            calibrate_method=method,
            percentile=pick("percentile", s.percentile) if method == "Percentile" else None,
            calibration_size=pick("calibration_size", self.calibration_sizes),
            **common,
        )

    def _weight_only(self, pick: Choose, quantized: tuple[str, ...], excluded: tuple[str, ...],
                     first: bool, last: bool, fused: str | None) -> QuantConfig:
        """The weight-only (MatMulNBits) part of :meth:`build`: its knobs and nothing else."""
        s = self._space
        symmetric = pick("weight_symmetric", s.weight_symmetric)
        bits = pick("bits", s.bits)
        ops = tuple(op for op in quantized if op in WEIGHT_ONLY_OP_TYPES
                    and (op != "Gather" or bits == 4))  # onnxruntime: int4 Gather only
        if not ops:
            return QuantConfig()
        op_of = dict(self.sensitive)
        return QuantConfig(
            approach="weight_only",
            op_types=ops,
            weight_symmetric=symmetric,
            bits=bits,
            block_size=pick("block_size", s.block_size),
            accuracy_level=pick("accuracy_level", s.accuracy_level),
            algorithm=pick("algorithm", s.algorithm),
            first_node_fp32=first,
            last_node_fp32=last,
            exclude_nodes=tuple(n for n in excluded if op_of.get(n) in ops),
            graph_optimization=fused,
        )

    def with_sensitive(self, nodes: Sequence[tuple[str, str]]) -> SearchSpace:
        """This space plus an int8/fp32 knob (``node.<name>``) for each (node, op type) pair."""
        return SearchSpace(self._space, self._model, self._calibration_size,
                           sensitive=nodes, where=self._where, fused=self._fused)

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

    def distinct_configs(self) -> list[QuantConfig]:
        """The distinct configs of the space (what an exhaustive search would measure)."""
        return list({config.key(): config for _, config in self.enumerate()}.values())

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
        ]
        rows += [(f"node.{node}", ["int8", "fp32"]) for node, _ in self.sensitive]
        return rows

    def params_for(self, config: QuantConfig) -> dict[str, Any] | None:
        """The Optuna params that produce ``config`` (for ``enqueue_trial``), if it is in the space."""
        for params, candidate in self.enumerate():
            if candidate == config:
                return params
        return None

    def default_int8(self) -> QuantConfig | None:
        """The first config that quantizes every op type with a knob (a warm start)."""
        for _, config in self.enumerate():
            if not config.is_fp32 and set(config.op_types) == set(self.op_knobs):
                return config
        return None
