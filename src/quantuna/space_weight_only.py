"""The weight-only (MatMulNBits) part of :meth:`quantuna.space.SearchSpace.build`: its knobs and
nothing else (calibration-free, no format, no activation type)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from quantuna.config import WEIGHT_ONLY_OP_TYPES, QuantConfig

if TYPE_CHECKING:
    from quantuna.spec import SpaceSection

Choose = Callable[[str, Sequence[Any]], Any]


def weight_only_config(s: SpaceSection, pick: Choose, quantized: Sequence[str],
                       excluded: Sequence[tuple[str, str]], first: bool, last: bool,
                       fused: str | None) -> QuantConfig:
    """The weight-only config of the chosen op types (``pick`` asks each knob that applies)."""
    symmetric = pick("weight_symmetric", s.weight_symmetric)
    bits = pick("bits", s.bits)
    ops = tuple(op for op in quantized if op in WEIGHT_ONLY_OP_TYPES
                and (op != "Gather" or bits == 4))  # onnxruntime: int4 Gather only
    if not ops:
        return QuantConfig()
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
        exclude_nodes=tuple(node for node, op in excluded if op in ops),
        graph_optimization=fused,
    )
