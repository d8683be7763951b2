"""count_int8_ops reads integer computation from the graph alone (onnx only, no onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantuna.config import QuantConfig
from quantuna.ort.int8ops import count_int8_ops
from quantuna.ort.prepare import constants_to_initializers, name_nodes
from quantuna.study.failures import failed_setting_of, is_blocked


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _q(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.float32), name)


def test_a_qdq_weight_counts_and_a_lone_qdq_pair_before_a_float_op_does_not() -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w_q")
    zp = numpy_helper.from_array(np.array(0, np.uint8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "s"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "s", "zp"], ["mq"]),
        helper.make_node("DequantizeLinear", ["mq", "s", "zp"], ["md"]),
        helper.make_node("Softmax", ["md"], ["y"]),  # fed by DQ, output not quantized: float
    ]
    assert count_int8_ops(_model(nodes, [w, zp, _q("s", 0.1)])) == {"QDQ MatMul": 1}


def test_an_activation_only_qdq_group_and_integer_operators_count() -> None:
    zp = numpy_helper.from_array(np.array(0, np.uint8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        helper.make_node("Add", ["xd", "xd"], ["a"]),
        helper.make_node("QuantizeLinear", ["a", "s", "zp"], ["aq"]),
        helper.make_node("DynamicQuantizeLinear", ["x"], ["dq", "ds", "dz"]),
        helper.make_node("MatMulInteger", ["dq", "dq"], ["mi"]),
        helper.make_node("DequantizeLinear", ["aq", "s", "zp"], ["y"]),
    ]
    counts = count_int8_ops(_model(nodes, [zp, _q("s", 0.1)]))
    assert counts == {"DynamicQuantizeLinear": 1, "MatMulInteger": 1, "QDQ Add": 1}


def test_float_graphs_and_their_subgraphs_count_nothing_and_integer_subgraphs_count() -> None:
    body = helper.make_graph([helper.make_node("QLinearMatMul", list("abcdefgh"), ["o"])], "body", [],
                             [helper.make_tensor_value_info("o", TensorProto.UINT8, [1])])
    fp32 = _model([helper.make_node("Relu", ["x"], ["y"])], [])
    assert count_int8_ops(fp32) == {}
    wrapped = _model([helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)], [])
    assert count_int8_ops(wrapped) == {"QLinearMatMul": 2}


def test_preparation_moves_constant_weights_and_names_nodes_deterministically() -> None:
    const = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.eye(4, dtype=np.float32)))
    model = _model([const, helper.make_node("MatMul", ["x", "w"], ["m"]),
                    helper.make_node("Relu", ["m"], ["y"], name="MatMul_1")], [])
    assert constants_to_initializers(model.graph) == 1
    assert [i.name for i in model.graph.initializer] == ["w"]
    assert name_nodes(model.graph) == 1
    assert [n.name for n in model.graph.node] == ["MatMul_0", "MatMul_1"]
    again = _model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])], [])
    name_nodes(again.graph)
    assert [n.name for n in again.graph.node] == ["MatMul_0", "Relu_1"]


def test_a_failed_calibration_setting_blocks_every_config_that_uses_it() -> None:
    entropy = QuantConfig(approach="static", quant_format="QDQ", types="U8S8", calibrate_method="Entropy",
                          calibration_size=40, activation_symmetric=False, op_types=("Conv",))
    failed = [{"setting": failed_setting_of(entropy), "reason": "x", "trial": 0}]
    other_ops = QuantConfig(**{**entropy.to_dict(), "op_types": ("Gemm",), "quant_format": "QOperator"})
    minmax = QuantConfig(**{**entropy.to_dict(), "calibrate_method": "MinMax"})
    dynamic = QuantConfig(approach="dynamic", types="U8S8", op_types=("Conv",))
    assert is_blocked(entropy, failed) and is_blocked(other_ops, failed)
    assert not is_blocked(minmax, failed) and not is_blocked(dynamic, failed)
