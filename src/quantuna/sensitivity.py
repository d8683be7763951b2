"""Sensitivity ranking: how much quantizing each compute node *alone* hurts the accuracy metric.

One experiment per node: the study's default int8 config restricted to that node (every other
compute node kept in fp32), evaluated on the first samples of the evaluation set and compared
with the fp32 model on the same samples. The most sensitive nodes get an int8/fp32 knob each
(``space.exclude_sensitive_nodes: K``).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from quantuna.config import QuantConfig
from quantuna.errors import TrialError
from quantuna.measure import open_session
from quantuna.quantize import quantize
from quantuna.session import Session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeSensitivity:
    """One node's accuracy loss when it alone is quantized (positive = worse)."""

    node: str
    op_type: str
    loss: float

    def to_dict(self) -> dict[str, object]:
        """Plain types, for the study's user attrs."""
        return {"node": self.node, "op_type": self.op_type, "loss": self.loss}


def _evaluate(path: Path, s: Session, samples: int) -> float:
    subset = s.evaluation.head(samples)
    ort = open_session(path, s.spec.measure.accuracy_threads)
    output = s.spec.accuracy.output or ort.get_outputs()[0].name
    chunks = [ort.run([output], batch)[0] for batch, _ in subset.batches(s.eval_batch_size)]
    return float(s.metric.fn(np.concatenate(chunks), subset.labels))


def rank_nodes(session: Session, config: QuantConfig, *, samples: int = 256) -> list[NodeSensitivity]:
    """Rank the compute nodes of ``config``'s op types, most sensitive first.

    Args:
        session: the prepared :class:`~quantuna.session.Session`.
        config: the int8 config each experiment restricts to one node.
        samples: how many evaluation samples each experiment uses.
    """
    s = session
    model = s.model
    samples = min(samples, len(s.evaluation))
    higher = s.metric.higher_is_better
    import onnx

    graph = onnx.load(str(model.path), load_external_data=False).graph
    op_of = {n.name: n.op_type for n in graph.node}
    candidates = [n for n in model.compute_nodes if op_of[n] in config.op_types]
    with tempfile.TemporaryDirectory(prefix="quantuna-sensitivity-") as tmp:
        reference = _evaluate(model.path, s, samples)
        ranges = s.ranges.get(config).path if config.approach == "static" else None
        ranking = []
        for node in candidates:
            others = tuple(n for n in candidates if n != node)
            single = replace(config, op_types=(op_of[node],), exclude_nodes=others,
                             first_node_fp32=False, last_node_fp32=False)
            try:
                path = quantize(model, single, Path(tmp) / "node.onnx", ranges=ranges)
                value = _evaluate(path, s, samples)
            except TrialError as exc:
                logger.warning("sensitivity of %s not measured: %s", node, exc)
                continue
            loss = reference - value if higher else value - reference
            ranking.append(NodeSensitivity(node, op_of[node], float(loss)))
    ranking.sort(key=lambda r: (-r.loss, candidates.index(r.node)))
    return ranking
