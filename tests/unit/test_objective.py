"""quantuna.objective: INC's semantics (each "Keeps" line of INC_OBJECTIVES.md) and true measurements."""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantuna import objective as qo
from quantuna.objective import (
    OBJECTIVES,
    Accuracy,
    Footprint,
    ModelSize,
    MultiObjective,
    Objective,
    Performance,
    accuracy_constraint,
    accuracy_target,
    model_size_bytes,
    objective_custom_registry,
    objective_registry,
    resolve_objective,
    weighted_metric,
    weighted_ratio_score,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "objectives.md"
linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


@pytest.fixture
def registry():
    """Let a test register objectives without leaking them into the next test."""
    saved = dict(OBJECTIVES)
    yield OBJECTIVES
    OBJECTIVES.clear()
    OBJECTIVES.update(saved)


def documented_custom_objective() -> type[Objective]:
    """The custom objective of docs/objectives.md, so the documented example stays runnable."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    source = next(b for b in blocks if "(Objective):" in b)
    namespace: dict[str, Any] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["CPUTime"]


def add_model(n_floats: int) -> onnx.ModelProto:
    """y = x + w with a float initializer w of n_floats elements."""
    weight = numpy_helper.from_array(
        np.random.default_rng(0).random(n_floats, dtype=np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n_floats])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n_floats])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def rss_mib() -> float:
    """VmRSS read here, independently of the objective code."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def run_cycle(obj: Objective) -> None:
    obj.start()
    if isinstance(obj, Accuracy):
        obj.end(0.9)
    else:
        obj.end()


# --- registry -------------------------------------------------------------------------------------


def test_builtins_are_registered_by_lower_case_name():
    assert {k: OBJECTIVES[k] for k in ("accuracy", "performance", "footprint", "modelsize")} == {
        "accuracy": Accuracy,
        "performance": Performance,
        "footprint": Footprint,
        "modelsize": ModelSize,
    }


def test_objective_registry_registers_lower_cased_class_name(registry):
    @objective_registry
    class MyLatency(Objective):
        pass

    assert registry["mylatency"] is MyLatency


def test_objective_registry_refuses_a_taken_name(registry):
    with pytest.raises(ValueError, match="same name"):

        @objective_registry
        class Performance(Objective):  # the clash is the point
            pass

    assert registry["performance"] is qo.Performance


def test_objective_custom_registry_lowers_name_and_refuses_duplicates(registry):
    class Mine(Objective):
        pass

    objective_custom_registry("MyObj", Mine)
    assert registry["myobj"] is Mine
    with pytest.raises(ValueError, match="same name"):
        objective_custom_registry("MYOBJ", Mine)


def test_objective_custom_registry_refuses_a_non_objective(registry):
    with pytest.raises(TypeError, match="Objective subclass"):
        objective_custom_registry("notone", dict)  # type: ignore[arg-type]


def test_resolve_objective_by_name_is_case_insensitive():
    assert resolve_objective("FootPrint") is Footprint


def test_resolve_objective_by_import_reference(tmp_path, monkeypatch):
    (tmp_path / "my_objectives.py").write_text(
        "from quantuna.objective import Objective\n"
        "class Energy(Objective):\n    representation = 'energy'\n    unit = 'J'\n"
        "NOT_AN_OBJECTIVE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    energy = resolve_objective("my_objectives:Energy")
    assert issubclass(energy, Objective) and energy.unit == "J"
    with pytest.raises(ValueError, match="not an Objective subclass"):
        resolve_objective("my_objectives:NOT_AN_OBJECTIVE")
    with pytest.raises(ValueError, match="cannot import"):
        resolve_objective("my_objectives:Missing")
    with pytest.raises(ValueError, match="cannot import"):
        resolve_objective("no_such_module_xyz:Energy")


def test_resolve_objective_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        resolve_objective("latency")
    for name in ("accuracy", "footprint", "modelsize", "performance", "package.module:ClassName"):
        assert name in str(info.value)


# --- Objective base -------------------------------------------------------------------------------


class Fixed(Objective):
    representation = "fixed"


def with_results(values: list[float], cls: type[Objective] = Fixed) -> Objective:
    obj = cls()
    obj._result_list.extend(values)
    return obj


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, 2.5),
        (1, None, 3.0),
        (1, 3, 2.5),
        (None, 2, 1.5),
        (-5, 100, 2.5),  # clipped to [0, len]
        (4, None, 0.0),  # empty slice
        (10, None, 0.0),
        (3, 1, 0.0),
    ],
)
def test_result_is_the_mean_of_the_clipped_slice(start, end, expected):
    assert with_results([1.0, 2.0, 3.0, 4.0]).result(start, end) == pytest.approx(expected)


def test_result_of_no_measurement_is_zero():
    assert Fixed().result() == 0.0


def test_result_list_reset_str_and_model():
    obj = with_results([1.0, 2.0])
    assert obj.result_list() == [1.0, 2.0]
    assert obj.reset() == [] and obj.result_list() == []
    assert str(obj) == "fixed"
    assert obj.model is None
    obj.model = "m.onnx"
    assert obj.model == "m.onnx"


def test_base_start_and_end_must_be_overridden():
    with pytest.raises(NotImplementedError):
        Objective().start()
    with pytest.raises(NotImplementedError):
        Objective().end()


# --- the contract every objective keeps --------------------------------------------------------


CONTRACT = [
    pytest.param(Accuracy, "accuracy", True, "", id="accuracy"),
    pytest.param(Performance, "performance", False, "ms", id="performance"),
    pytest.param(Footprint, "footprint", False, "MiB", id="footprint"),
    pytest.param(ModelSize, "modelsize", False, "MiB", id="modelsize"),
    pytest.param(documented_custom_objective, "cputime", False, "s", id="custom-from-docs"),
]


@pytest.mark.parametrize(("make", "representation", "higher", "unit"), CONTRACT)
def test_contract(make, representation, higher, unit):
    cls = make() if make is documented_custom_objective else make
    obj = cls()
    obj.model = add_model(16)
    assert (str(obj), obj.higher_is_better, obj.unit) == (representation, higher, unit)
    assert isinstance(obj.higher_is_better, bool)
    obj.reset()
    for _ in range(3):
        run_cycle(obj)
    assert len(obj.result_list()) == 3
    assert math.isfinite(obj.result()) and math.isfinite(obj.result(1, 2))
    assert all(math.isfinite(v) for v in obj.result_list())
    obj.reset()
    assert obj.result_list() == [] and obj.result() == 0.0


@pytest.mark.parametrize("name", ["accuracy", "performance", "footprint", "modelsize"])
def test_builtin_names_resolve_to_classes_with_that_representation(name):
    assert str(resolve_objective(name)()) == name


@pytest.mark.parametrize("cls", [Performance, Footprint])
def test_end_without_start_is_an_error(cls):
    with pytest.raises(RuntimeError, match="without start"):
        cls().end()


# --- built-ins against independent measurements ------------------------------------------------


def test_accuracy_records_what_end_receives():
    acc = Accuracy()
    for value in (0.5, 0.7):
        acc.start()
        acc.end(value)
    assert acc.result_list() == [0.5, 0.7] and acc.result() == pytest.approx(0.6)


def test_performance_median_matches_a_separately_timed_sleep():
    perf, outside = Performance(), []
    for _ in range(7):
        t0 = time.perf_counter()
        perf.start()
        time.sleep(0.02)
        perf.end()
        outside.append((time.perf_counter() - t0) * 1000)
    assert perf.result() == pytest.approx(statistics.median(outside), abs=1.0)
    assert 20.0 <= perf.result() < 40.0


def test_performance_reports_the_median_and_throughput():
    perf = with_results([1.0, 2.0, 100.0], Performance)
    assert perf.result() == 2.0  # INC would report the mean, 34.3
    assert perf.throughput(batch_size=4) == pytest.approx(2000.0)
    assert Performance().throughput() == 0.0


def external_data_model(tmp_path: Path) -> Path:
    path = tmp_path / "big.onnx"
    onnx.save(add_model(1_000_000), str(path), save_as_external_data=True, location="big.onnx.data")
    return path


def test_model_size_counts_external_data(tmp_path):
    path = external_data_model(tmp_path)
    expected = os.path.getsize(path) + os.path.getsize(tmp_path / "big.onnx.data")
    assert os.path.getsize(tmp_path / "big.onnx.data") >= 4_000_000
    assert model_size_bytes(path) == expected
    assert model_size_bytes(str(path)) == expected
    size = ModelSize()
    size.model = path
    run_cycle(size)
    assert size.result() == pytest.approx(expected / 2**20)


def test_model_size_of_a_proto(tmp_path):
    model = add_model(1000)
    assert model_size_bytes(model) == len(model.SerializeToString())
    path = external_data_model(tmp_path)
    stub = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ValueError, match="base_dir"):
        model_size_bytes(stub)
    expected = len(stub.SerializeToString()) + os.path.getsize(tmp_path / "big.onnx.data")
    assert model_size_bytes(stub, base_dir=tmp_path) == expected


def test_model_size_needs_a_model():
    with pytest.raises(RuntimeError, match="needs a model"):
        ModelSize().end()


def in_quiet_child(fn):
    """``fn()`` in a forked child: one thread, so no other thread of the test session (Optuna
    heartbeats, onnxruntime pools, earlier tests' leftovers) frees or grows memory meanwhile."""
    import pickle

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            payload = pickle.dumps(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload = pickle.dumps(("error", repr(exc)))
        with os.fdopen(write, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok", value
    return value


def measure_footprint(work) -> tuple[float, float]:
    """(Footprint's reading, VmRSS growth read around the same region by this test), taken in a
    quiet child process."""
    return in_quiet_child(lambda: _measure_footprint(work))


def _measure_footprint(work) -> tuple[float, float]:
    gc.collect()
    footprint = Footprint()
    before = rss_mib()
    footprint.start()
    kept = work()
    after = rss_mib()
    footprint.end()
    del kept
    return footprint.result(), after - before


def allocate_40_mib():
    """40 MiB of touched anonymous memory, unmapped when the returned object goes (malloc may
    keep a freed block, and whether it does depends on what the process did before)."""
    import mmap

    block = mmap.mmap(-1, 40 * 2**20)
    view = np.frombuffer(block, dtype=np.uint8)
    view.fill(1)
    del view
    return block


@linux_only
def test_footprint_of_numpy_allocation_matches_rss():
    measured, outside = measure_footprint(allocate_40_mib)
    assert measured >= 35
    assert measured == pytest.approx(outside, rel=0.10)


@linux_only
def test_footprint_is_the_peak_not_the_end():
    def allocate_and_free():
        array = allocate_40_mib()
        peak = rss_mib()
        del array
        return peak

    def region():
        gc.collect()
        footprint = Footprint()
        before = rss_mib()
        footprint.start()
        peak = allocate_and_free()
        footprint.end()
        return rss_mib() - before, footprint.result(), peak - before

    left, measured, peak = in_quiet_child(region)
    assert left < 10  # the memory is gone at the end...
    assert measured == pytest.approx(peak, rel=0.10)  # ...but the peak counts


@linux_only
def test_footprint_falls_back_to_sampling(monkeypatch, tmp_path):
    monkeypatch.setattr(Footprint, "clear_refs_path", str(tmp_path / "missing" / "clear_refs"))

    def allocate_and_wait():
        array = allocate_40_mib()
        time.sleep(0.05)
        return array

    measured, outside = measure_footprint(allocate_and_wait)
    assert measured >= 35
    assert measured == pytest.approx(outside, rel=0.10)


NATIVE_MEMORY = """\
import gc, json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from quantuna.objective import Footprint

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

path, n = sys.argv[1], int(sys.argv[2])
feed = {"x": np.zeros(n, np.float32)}
options = ort.SessionOptions()
options.intra_op_num_threads = 1
gc.collect()
footprint = Footprint()
before = rss_mib()
footprint.start()
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
kept = session.run(None, feed)
after = rss_mib()
footprint.end()
print(json.dumps([footprint.result(), after - before]))
"""


@linux_only
def test_footprint_counts_onnxruntime_native_memory(tmp_path):
    """In a fresh interpreter: a forked or long-lived one may hand onnxruntime heap pages that
    are already resident, and then no reading, inside or outside, sees them."""
    pytest.importorskip("onnxruntime")
    path = tmp_path / "big.onnx"
    n = 10 * 2**20  # 40 MiB of float32
    onnx.save(add_model(n), str(path))
    out = subprocess.run([sys.executable, "-c", NATIVE_MEMORY, str(path), str(n)],
                         capture_output=True, text=True, check=True, timeout=120)
    measured, outside = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured >= 40  # tracemalloc (INC) reads 0 here
    assert measured == pytest.approx(outside, rel=0.10)


# --- accuracy criterion -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "criterion", "target"),
    [
        (0.8, {}, 0.792),  # default relative 1 %
        (0.8, {"relative": 0.01}, 0.792),
        (0.8, {"relative": 0.01, "higher_is_better": False}, 0.808),
        (0.8, {"absolute": 0.01}, 0.79),
        (0.8, {"absolute": 0.01, "higher_is_better": False}, 0.81),
        (0.8, {"relative": -0.01}, 0.808),  # negative g: must improve
        (0.8, {"absolute": -0.01}, 0.81),
        (-2.0, {"relative": 0.1}, -2.2),  # |B| margin: INC gives -1.8, above the baseline
        (-2.0, {"relative": 0.1, "higher_is_better": False}, -1.8),
        (0.0, {"relative": 0.1}, 0.0),
    ],
)
def test_accuracy_target(baseline, criterion, target):
    assert accuracy_target(baseline, criterion) == pytest.approx(target)


@pytest.mark.parametrize(
    "criterion",
    [{"relative": 0.1, "absolute": 0.1}, {"relativ": 0.1}, {"relative": 1.0}, {"relative": -1.5}],
)
def test_accuracy_target_refuses_bad_criteria(criterion):
    with pytest.raises(ValueError):
        accuracy_target(0.8, criterion)


def test_accuracy_constraint_direction_and_exact_boundary():
    assert accuracy_constraint(0.75, 0.75) == 0.0  # at the target: feasible
    assert accuracy_constraint(0.70, 0.75) == pytest.approx(0.05)
    assert accuracy_constraint(0.80, 0.75) == pytest.approx(-0.05)
    assert accuracy_constraint(0.30, 0.25, higher_is_better=False) == pytest.approx(0.05)
    assert accuracy_constraint(0.25, 0.25, higher_is_better=False) == 0.0


@pytest.mark.parametrize(
    ("criterion", "at_target"),
    [
        ({"absolute": 0.25}, 0.75),
        ({"relative": 0.25}, 0.75),
        ({"absolute": 0.25, "higher_is_better": False}, 1.25),
    ],
)
def test_a_trial_exactly_at_the_target_passes_everywhere(criterion, at_target):
    obj = MultiObjective(["accuracy"], criterion)
    obj.baseline = (1.0, [1.0])
    obj.evaluate(lambda model: at_target, model=None)
    assert obj.accuracy_meets()
    assert obj.accuracy_meet_req((at_target, [at_target]))
    assert obj.compare(None, (1.0, [1.0]))
    assert obj.best_result([[at_target, [at_target]]], (1.0, [1.0])).feasible


def test_weighted_metric_is_the_weighted_average():
    assert weighted_metric([0.8, 0.6], [3, 1]) == pytest.approx(0.75)  # INC: mean(w*m) = 1.5
    with pytest.raises(ValueError):
        weighted_metric([0.8, 0.6], [1])


def test_weighted_metrics_meet_a_target_on_their_weighted_average():
    obj = MultiObjective(["accuracy"], {"absolute": 0.05}, metric_weight=[3, 1])
    obj.baseline = ([0.8, 0.6], [[0.8, 0.6]])
    assert obj.accuracy_target == [pytest.approx(0.70)]
    assert obj.accuracy_meet_req(([0.72, 0.66], [0.0]))  # 0.705
    assert not obj.accuracy_meet_req(([0.70, 0.66], [0.0]))  # 0.69


def test_several_metrics_each_meet_their_own_target_in_their_own_direction():
    obj = MultiObjective(["accuracy"], {"relative": 0.1}, metric_criterion=[True, False])
    obj.baseline = ([0.8, 0.2], [[0.8, 0.2]])
    assert obj.accuracy_target == [pytest.approx(0.72), pytest.approx(0.22)]
    assert obj.accuracy_meet_req(([0.75, 0.21], [0.0]))
    assert not obj.accuracy_meet_req(([0.75, 0.23], [0.0]))
    assert not obj.accuracy_meet_req(([0.70, 0.21], [0.0]))


# --- MultiObjective -----------------------------------------------------------------------------


def test_multi_objective_builds_from_names_classes_and_instances():
    mine = Performance()
    obj = MultiObjective(["Accuracy", Footprint, mine, "modelsize"], {"relative": 0.01})
    assert obj.objectives[2] is mine
    assert [type(o) for o in obj.objectives] == [Accuracy, Footprint, Performance, ModelSize]
    assert obj.representation == ["Accuracy", "Footprint", "Performance", "Modelsize"]
    assert obj.obj_criterion == [True, False, False, False]


def test_obj_criterion_defaults_follow_the_accuracy_direction_and_broadcast():
    lower = MultiObjective(
        ["accuracy", "performance"], {"absolute": 0.1, "higher_is_better": False}
    )
    assert lower.obj_criterion == [False, False]
    assert MultiObjective(["accuracy", "performance"], {}, obj_criterion=[True]).obj_criterion == [
        True,
        True,
    ]
    with pytest.raises(ValueError, match="obj_criterion"):
        MultiObjective(["accuracy", "performance"], {}, obj_criterion=[True, False, True])
    with pytest.raises(ValueError, match="obj_weight"):
        MultiObjective(["accuracy", "performance"], {}, obj_weight=[1.0])
    with pytest.raises(ValueError, match="unknown objective"):
        MultiObjective(["latency"], {})


def test_evaluate_measures_every_objective_around_eval_func():
    obj = MultiObjective(["accuracy", "performance", "modelsize"], {"relative": 0.01})
    model = add_model(1000)

    def eval_func(m):
        assert m is model
        time.sleep(0.01)
        return 0.9

    acc, values = obj.evaluate(eval_func, model)
    assert acc == 0.9 and values[0] == 0.9
    assert values[1] >= 10.0  # ms
    assert values[2] == pytest.approx(len(model.SerializeToString()) / 2**20)
    assert all(o.model is model for o in obj.objectives)
    assert obj.val == (acc, values)


def test_evaluate_with_is_measure_hands_the_first_objective_to_eval_func():
    obj = MultiObjective(["performance"], {"relative": 0.01}, is_measure=True)
    seen = []

    def eval_func(model, measurer):
        seen.append(measurer)
        for _ in range(3):
            measurer.start()
            measurer.end()
        return 0.5

    acc, _ = obj.evaluate(eval_func, "m")
    assert seen == [obj.objectives[0]] and acc == 0.5 and len(obj.objectives[0].result_list()) == 3


def test_compare_needs_no_worse_objective_and_passing_accuracy():
    obj = MultiObjective(["performance", "modelsize"], {"relative": 0.01})
    baseline = (0.8, [10.0, 5.0])
    obj.val = (0.795, [4.0, 2.0])
    assert obj.compare(None, baseline)
    assert obj.compare((0.8, [4.0, 2.0]), baseline)  # ties are not worse
    assert obj.compare((0.8, [5.0, 3.0]), baseline)
    assert not obj.compare((0.8, [3.0, 3.0]), baseline)  # slower than the last best
    obj.val = (0.79, [1.0, 1.0])
    assert not obj.compare(None, baseline)  # fails 0.792


def test_compare_respects_higher_is_better_objectives():
    obj = MultiObjective(["accuracy", "performance"], {"relative": 0.01})
    obj.val = (0.80, [0.80, 4.0])
    assert obj.compare((0.80, [0.80, 4.0]), (0.8, [0.8, 10.0]))  # tie (INC: strict for these)
    assert not obj.compare((0.81, [0.81, 5.0]), (0.8, [0.8, 10.0]))  # less accurate than the last


def test_accuracy_meets_needs_a_baseline_and_an_evaluation():
    obj = MultiObjective(["accuracy"], {"relative": 0.01})
    with pytest.raises(RuntimeError, match="evaluate"):
        obj.accuracy_meets()
    obj.val = (0.8, [0.8])
    with pytest.raises(RuntimeError, match="baseline"):
        obj.accuracy_meets()
    obj.accuracy_target = [0.85]
    assert not obj.accuracy_meets()


WORKED_BASELINE = (0.80, [0.80, 10.0])
WORKED_TRIALS = [[0.795, [0.795, 5.0]], [0.790, [0.790, 4.0]], [0.800, [0.800, 8.0]]]


def test_best_result_worked_example():
    obj = MultiObjective(["accuracy", "performance"], {"relative": 0.01}, obj_weight=[0.5, 0.5])
    trials, baseline = copy.deepcopy(WORKED_TRIALS), copy.deepcopy(WORKED_BASELINE)
    best = obj.best_result(trials, baseline)
    assert best.scores == pytest.approx([0.55, 0.50, 0.50], abs=0.005)
    assert best.passed == (True, False, True)
    assert best.feasible and best.index == 0 and best.trial == WORKED_TRIALS[0]
    index, trial = best  # INC's (best_trial, tune_data[best_trial])
    assert (index, trial) == (0, WORKED_TRIALS[0])
    idx, trial = obj.best_result(trials, baseline)  # the Neural Compressor idiom
    assert isinstance(best, tuple) and len(best) == 2 and best[0] == idx == 0
    assert best == (0, WORKED_TRIALS[0]) and best._fields[:2] == ("index", "trial")
    assert (trials, baseline) == (WORKED_TRIALS, WORKED_BASELINE)  # inputs untouched


def test_best_result_under_an_absolute_criterion_uses_baseline_minus_trial():
    obj = MultiObjective(["accuracy", "performance"], {"absolute": 0.02}, obj_weight=[0.5, 0.5])
    best = obj.best_result(WORKED_TRIALS, WORKED_BASELINE)
    # accuracy column 0.8 - trial = [.005, .01, 0] -> flipped and scaled [0.5, 0, 1]
    assert best.scores == pytest.approx([0.55, 0.50, 0.50])
    assert best.passed == (True, True, True) and best.index == 0


def test_best_result_default_weights_are_equal_and_constant_columns_stay():
    obj = MultiObjective(["accuracy", "performance", "modelsize"], {"relative": 0.01})
    trials = [[a, [a, p, 5.0]] for a, (_, [_, p]) in zip((0.795, 0.79, 0.8), WORKED_TRIALS)]
    best = obj.best_result(trials, (0.8, [0.8, 10.0, 5.0]))
    # modelsize column is baseline/trial = 1 everywhere: left as is, not scaled to 0
    assert best.scores == pytest.approx(
        [(0.503 + 0.6 + 1) / 3, (0 + 1 + 1) / 3, (1 + 0 + 1) / 3], abs=0.002
    )


def test_best_result_when_no_trial_passes_says_so_and_picks_the_closest(caplog):
    obj = MultiObjective(["accuracy", "performance"], {"relative": 0.01})
    trials = [[0.5, [0.5, 1.0]], [0.78, [0.78, 9.0]], [0.6, [0.6, 2.0]]]
    with caplog.at_level(logging.WARNING, logger="quantuna.objective"):
        best = obj.best_result(trials, WORKED_BASELINE)
    assert not best.feasible and best.passed == (False, False, False)
    assert best.index == 1  # INC returns trial 0 without a word
    assert "no trial meets" in caplog.text


def test_best_result_needs_trials():
    with pytest.raises(ValueError, match="at least one"):
        MultiObjective(["accuracy"], {}).best_result([], (0.8, [0.8]))


# --- weighted mode --------------------------------------------------------------------------------


def test_weighted_ratio_score():
    assert weighted_ratio_score(
        [0.8, 10.0], [0.8, 10.0], [True, False], [0.7, 0.3]
    ) == pytest.approx(1.0)
    assert weighted_ratio_score([0.8, 5.0], [0.8, 10.0], [True, False], [1, 1]) == pytest.approx(
        1.5
    )
    assert weighted_ratio_score([0.4, 10.0], [0.8, 10.0], [True, False], [3, 1]) == pytest.approx(
        0.625
    )
    assert weighted_ratio_score([0.4, 10.0], [0.8, 10.0], [True, False]) == pytest.approx(0.75)


def test_weighted_ratio_score_guards_zero_and_negative_values():
    assert weighted_ratio_score([0.0], [10.0], [False], [1]) == qo.RATIO_CAP  # zero cost: capped
    assert weighted_ratio_score([0.0], [0.0], [False], [1]) == 1.0  # both zero: as good as baseline
    assert weighted_ratio_score([0.0], [0.8], [True], [1]) == pytest.approx(
        0.0, abs=1e-6
    )  # zero accuracy
    assert weighted_ratio_score([-1.0], [0.8], [True], [1]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        weighted_ratio_score([math.nan], [0.8], [True], [1])
    with pytest.raises(ValueError, match="one entry each"):
        weighted_ratio_score([0.8], [0.8, 1.0], [True], [1])


def test_objective_module_imports_neither_optuna_nor_onnxruntime():
    """Import quantuna.objective in a fresh interpreter: no optuna, onnxruntime or onnx."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('objective_alone', {qo.__file__!r})\n"
        "module = sys.modules['objective_alone'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "heavy = {'optuna', 'onnxruntime', 'onnx'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
