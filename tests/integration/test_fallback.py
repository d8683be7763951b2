"""``exclude_sensitive_nodes: auto`` on a model where two specific layers break int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import write_spec
from onnx import TensorProto, helper, numpy_helper

from quantuna.study.fallback import shortest_feasible_prefix
from quantuna.study.run import run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
BROKEN = ("fc2", "fc3")


def build_two_broken(path: Path, seed: int = 0, outlier: float = 2000.0) -> Path:
    """A 4-layer MLP (Gemm + Relu) whose fc2 and fc3 each hold one huge weight on an input that
    is always 0: fp32 ignores it, but a per-tensor int8 scale stretched by it rounds every other
    weight of that layer to 0. The other layers quantize harmlessly."""
    rng = np.random.default_rng(seed)
    sizes = [(16, 32), (32, 32), (32, 32), (32, 3)]
    inits, nodes, x = [], [], "x"
    weights: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (n_in, n_out) in enumerate(sizes, 1):
        w = rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in)).astype(np.float32)
        b = rng.normal(0, 0.1, (n_out,)).astype(np.float32)
        if i in (1, 2):  # output channel 0 is always 0 after the Relu
            w[0, :] = 0.0
            b[0] = -1.0
        if i in (2, 3):  # the huge weight on that dead input
            w[:, 0] = 0.0
            w[1, 0] = outlier
        if i == len(sizes):  # balanced classes: centre the logits on typical inputs
            h = np.random.default_rng(seed + 1).normal(0, 1, (512, 16)).astype(np.float32)
            for wi, bi in weights:
                h = np.maximum(h @ wi.T + bi, 0)
            b = -(h @ w.T).mean(axis=0).astype(np.float32)
        weights.append((w, b))
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "logits" if i == len(sizes) else f"g{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [out], name=f"fc{i}", transB=1))
        if i < len(sizes):
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes, "two_broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def broken_dir(tmp_path: Path) -> Path:
    import onnxruntime as ort

    model = build_two_broken(tmp_path / "broken.onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 16)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0].argmax(axis=1).astype(np.int64)
    assert np.bincount(y, minlength=3).min() > 50  # a task int8 can lose
    np.savez(tmp_path / "calib.npz", x=rng.normal(0, 1, (64, 16)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    return tmp_path


def broken_spec(exclude: int | str) -> dict[str, object]:
    return {
        "study": {"name": f"broken-{exclude}", "seed": 0},
        "model": "broken.onnx",
        "data": {
            "calibration": {"path": "calib.npz", "inputs": {"x": "x"}, "size": 64, "batch_size": 16},
            "evaluation": {"path": "eval.npz", "inputs": {"x": "x"}, "labels": "y", "batch_size": 50},
        },
        "accuracy": {"metric": "top1"},
        "tuning": {
            "multi_objectives": {"objective": ["accuracy", "performance", "modelsize"],
                                 "higher_is_better": [True, False, False]},
            "accuracy_criterion": {"relative": 0.03},  # int8 fc1 + fc4 lose 1.7-2.3 % (rounding)
        },
        "measure": {"performance": {"batch_size": 1, "warmup": 2, "iterations": 10, "threads": 1}},
        "space": {"op_types": {"Gemm": ["int8"]}, "exclude_sensitive_nodes": exclude},
    }


def test_auto_finds_the_broken_layers_and_starts_feasible(broken_dir: Path) -> None:
    result = run_study(write_spec(broken_dir, broken_spec("auto")), n_trials=3)
    fallback = result.study.user_attrs["fallback"]
    assert sorted(fallback["nodes"]) == sorted(BROKEN) and fallback["prefix"] == 2
    assert [e["prefix"] for e in fallback["evaluations"]] == [0, 1, 2]  # three evaluations
    first = result.study.trials[0]
    assert first.user_attrs["feasible"] is True
    assert sorted(first.user_attrs["config"]["exclude_nodes"]) == sorted(BROKEN)
    assert first.user_attrs["config"]["op_types"] == ["Gemm"]  # fc1 and fc4 are int8
    knobs = {name for name in first.params if name.startswith("node.")}
    assert knobs == {"node.fc1", "node.fc2", "node.fc3", "node.fc4"}  # prefix + 2 neighbours
    assert result.pareto  # a feasible int8 answer, no K guessed
    ranking = result.study.user_attrs["sensitivity"]
    keys = [(-r["loss"], -r["drift"]) for r in ranking]
    assert keys == sorted(keys) and {r["node"] for r in ranking[:2]} == set(BROKEN)
    assert all(r["drift"] > 0 for r in ranking)  # per-sample output drift orders metric ties


def test_without_fallback_the_model_breaks_int8(broken_dir: Path) -> None:
    result = run_study(write_spec(broken_dir, broken_spec(0)), n_trials=1)
    assert result.study.trials[0].user_attrs["feasible"] is False


def test_auto_resumes_with_the_stored_fallback(broken_dir: Path) -> None:
    path = write_spec(broken_dir, broken_spec("auto"))
    first = run_study(path, n_trials=1)
    again = run_study(path, n_trials=2)
    assert again.study.user_attrs["fallback"] == first.study.user_attrs["fallback"]
    assert len(again.study.trials) == 2


@pytest.mark.parametrize("answer", [0, 1, 2, 3, 5, 8, 13, 20])
def test_shortest_feasible_prefix_bisects(answer: int) -> None:
    asked: list[int] = []

    def feasible(n: int) -> bool:
        asked.append(n)
        return n >= answer

    assert shortest_feasible_prefix(20, feasible) == answer
    assert len(asked) == len(set(asked)) and 20 not in asked  # never twice, the whole never
    assert len(asked) <= 2 * 5 + 2  # about 2 log2(20) + 2


def test_workers_starting_together_rank_and_bisect_once(broken_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import optuna

    import quantuna.study.sensitivity as sensitivity
    from quantuna.spec import load_spec
    from quantuna.study.baseline import ensure_baseline
    from quantuna.study.session import prepare

    spec = load_spec(write_spec(broken_dir, broken_spec("auto")))
    session = prepare(spec)
    study = optuna.create_study(storage=spec.storage, study_name="together",
                                directions=session.directions)
    ensure_baseline(study, session)
    calls: list[str] = []
    rank, bisect = sensitivity.rank_nodes, sensitivity.find_fallback
    monkeypatch.setattr(sensitivity, "rank_nodes", lambda *a, **k: calls.append("rank") or rank(*a, **k))
    monkeypatch.setattr(sensitivity, "find_fallback", lambda *a: calls.append("bisect") or bisect(*a))
    spaces: list[object] = []

    def worker() -> None:
        mine = optuna.load_study(study_name="together", storage=spec.storage)
        spaces.append(sensitivity.ensure_sensitivity(mine, session).space.sensitive)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == ["bisect", "rank"]  # one worker did the work, the other read it
    assert len(spaces) == 2 and spaces[0] == spaces[1]
