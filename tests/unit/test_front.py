"""The reported front and the pick: dominance with tolerance, one point per model, never slower
than fp32, confirmed figures first, an honest best effort (synthetic trials, no onnxruntime)."""

from __future__ import annotations

from typing import Any

import pytest

from quantuna.config import QuantConfig
from quantuna.front import Point, equal_within_noise, reported_front
from quantuna.metrics import BUILTIN_METRICS, Metric, resolve_metric, unreachable_bound
from quantuna.results import TrialResult, TuneResult, pareto_front

NAMES = ["accuracy", "performance", "modelsize"]
HIGHER = [True, False, False]
BASE = {"accuracy": 0.95, "performance": 0.05, "modelsize": 1.0}


def trial(number: int, *, acc: float = 0.95, ratio: float = 1.0, spread: float = 0.02,
          size: float = 0.3, ops: tuple[str, ...] = ("Conv", "Gemm"), sha: str | None = None,
          feasible: bool = True, nbytes: int = 1000, **config: Any) -> TrialResult:
    config.setdefault("calibration_size", 10 + number)  # distinct configs
    cfg = QuantConfig() if not ops else QuantConfig(approach="static", op_types=ops, **config)
    latency = {"ms": 0.05 * ratio, "fp32_ms": 0.05, "ratio": ratio, "low": ratio - spread,
               "high": ratio + spread, "rounds": 10, "runs": 100}
    return TrialResult(
        number=number, config=cfg,
        values={"accuracy": acc, "performance": 0.05 * ratio, "modelsize": size},
        relative={"accuracy": acc / 0.95, "performance": ratio, "modelsize": size},
        constraint=0.94 - acc, feasible=feasible, reused_from=None, summary=f"t{number}",
        model_sha256=sha or f"sha{number}", latency=latency, model_bytes=nbytes,
    )


def result(trials: list[TrialResult]) -> TuneResult:
    return TuneResult(
        study=None,  # type: ignore[arg-type]  (the rules below never read it)
        mode="pareto", objective_names=NAMES, higher_is_better=HIGHER, weights=[0.8, 0.1, 0.1],
        accuracy_criterion={"absolute": 0.01, "higher_is_better": True},
        baseline={"values": BASE, "accuracy_target": 0.94}, trials=trials,
        pareto=pareto_front(trials, NAMES, HIGHER),
    )


def test_latencies_within_each_others_interval_are_equal() -> None:
    assert equal_within_noise(1.00, (0.95, 1.05), 1.03, (0.99, 1.07))
    assert not equal_within_noise(1.00, (0.99, 1.01), 1.03, (0.99, 1.07))  # 1.03 outside
    assert not equal_within_noise(1.0, None, 1.0 + 1e-9, None)  # exact values compare exactly


def test_two_configs_that_tie_on_latency_are_one_point_and_the_simpler_wins() -> None:
    # the trials 11 and 32: same kernels, "+20.6 %" vs "+2.1 %" was noise
    many = trial(11, ratio=0.93, spread=0.06, ops=("Conv", "Gemm"))
    fewer = trial(32, ratio=0.97, spread=0.05, ops=("Conv",))
    front = pareto_front([many, fewer], NAMES, HIGHER)
    assert [t.number for t in front] == [32]


def test_a_real_latency_difference_keeps_the_trade_off() -> None:
    fast = trial(1, ratio=0.60, spread=0.02, size=0.5)
    small = trial(2, ratio=0.90, spread=0.02, size=0.3)
    assert [t.number for t in pareto_front([fast, small], NAMES, HIGHER)] == [1, 2]
    # one byte smaller and tied on latency: the smaller file dominates, one point is left
    twin = trial(3, ratio=0.61, spread=0.02, size=0.5 - 1e-6)
    assert [t.number for t in pareto_front([fast, small, twin], NAMES, HIGHER)] == [2, 3]


def test_byte_identical_models_are_one_point() -> None:
    a = trial(4, sha="same", ops=("Conv", "Gemm"), nbytes=900)
    b = trial(5, sha="same", ops=("Conv",), nbytes=900, ratio=0.5)  # its latency was luckier
    front = pareto_front([a, b], NAMES, HIGHER)
    assert [t.number for t in front] == [5]  # fewer quantized op types: the simpler config


def test_equal_points_collapse_whatever_their_order() -> None:
    points = [Point(i, (1.0, 1.0 + i * 0.001), (None, (0.9, 1.1)), None, (2 - i,)) for i in range(3)]
    assert [p.key for p in reported_front(points, [True, False])] == [2]


def test_the_pick_is_never_slower_than_fp32() -> None:
    fp32 = trial(0, ops=(), size=1.0, ratio=1.0)
    slow_small = trial(1, ratio=1.16, spread=0.03, size=0.25)  # 4x smaller, 16 % slower
    r = result([fp32, slow_small])
    assert {t.number for t in r.pareto} == {0, 1}
    pick = r.pick("weighted")
    assert pick.trial.number == 0 and pick.feasible
    assert "slower than fp32: trial 1" in pick.note
    # a rule that asks for another objective may, and says so
    small = r.pick("best:modelsize")
    assert small.trial.number == 1 and "slower than fp32" in small.note
    assert r.pick("best:performance").note == ""


def test_within_noise_of_fp32_is_not_slower() -> None:
    tie = trial(1, ratio=1.02, spread=0.05, size=0.25)
    r = result([trial(0, ops=(), size=1.0), tie])
    assert r.pick("weighted").trial.number == 1


def test_the_pick_uses_confirmed_figures() -> None:
    measured_fast = trial(1, ratio=0.70, spread=0.03, size=0.25)
    r = result([trial(0, ops=(), size=1.0), measured_fast])
    assert r.pick().trial.number == 1
    confirmed = measured_fast.with_confirmed({"ms": 0.06, "fp32_ms": 0.05, "ratio": 1.2, "low": 1.15,
                                              "high": 1.25, "rounds": 10, "runs": 100})
    assert confirmed.values["performance"] == 0.06 and confirmed.relative["performance"] == 1.2
    again = result([trial(0, ops=(), size=1.0), confirmed])
    assert again.pick().trial.number == 0


def test_nothing_feasible_gives_the_closest_trial_as_best_effort() -> None:
    near = trial(1, acc=0.93, feasible=False)
    far = trial(2, acc=0.50, feasible=False, ratio=0.5)
    r = result([far, near])
    for rule in ("weighted", "best:performance"):
        pick = r.pick(rule)
        assert pick.trial.number == 1 and pick.feasible is False
        assert pick.reason.startswith("no trial meets the accuracy target; best effort: trial 1")
        assert "accuracy 0.93, target 0.94" in pick.reason


@pytest.mark.parametrize("name, target, bound", [
    ("top1", 1.0013, 1.0), ("top5", 1.5, 1.0), ("cosine", 1.01, 1.0), ("mse", -0.001, 0.0)])
def test_a_target_beyond_a_builtin_metrics_bound_is_unreachable(name: str, target: float, bound: float) -> None:
    metric = BUILTIN_METRICS[name]
    assert unreachable_bound(metric, target) == bound
    assert unreachable_bound(metric, bound) is None  # exactly at the bound: reachable


def test_a_custom_metric_declares_its_bound(tmp_path) -> None:
    (tmp_path / "m.py").write_text(
        "def score(outputs, labels):\n    return 0.5\nscore.bounds = (0.0, 100.0)\n"
        "def plain(outputs, labels):\n    return 0.5\n")
    declared = resolve_metric(f"{tmp_path / 'm.py'}:score", None, where="spec")
    assert unreachable_bound(declared, 100.5) == 100.0 and unreachable_bound(declared, 99) is None
    plain = resolve_metric(f"{tmp_path / 'm.py'}:plain", None, where="spec")
    assert unreachable_bound(plain, 1e9) is None  # nothing declared: nothing known
    lower = Metric("loss", plain.fn, False, bounds=(0.0, 1.0))
    assert unreachable_bound(lower, -0.1) == 0.0


def test_confirm_candidates_are_the_pick_the_front_then_the_layer_behind_it() -> None:
    from quantuna.study.confirm import candidates

    fp32 = trial(0, ops=(), size=1.0)
    fast = trial(1, ratio=0.60, spread=0.02, size=0.5)
    small = trial(2, ratio=0.90, spread=0.02, size=0.3)
    behind = trial(3, ratio=0.70, spread=0.02, size=0.55)  # dominated by 1 only
    far = trial(4, ratio=0.95, spread=0.01, size=0.9)  # dominated by 1 and 2, behind 3 too
    r = result([fp32, fast, small, behind, far])
    assert [t.number for t in r.pareto] == [1, 2]
    chosen = [t.number for t in candidates(r, 8)]
    pick = r.pick().trial.number
    assert chosen[0] == pick and set(chosen[:2]) == {1, 2}
    assert chosen[2:] == [3]  # the second layer; 4 (and fp32 behind it) come later
    assert len(candidates(r, 1)) == 1
