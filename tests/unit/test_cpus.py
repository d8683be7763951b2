"""Latencies compare only within one CPU: a study timed on two CPUs (trial attrs written by hand
in an in-memory study) reports the front, the pick, the confirm candidates and the progress bar
of one CPU, says which and why in one line, names the others with their trial counts, and a
single-CPU study is unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from quantuna.cli.progress import Progress
from quantuna.config import QuantConfig
from quantuna.errors import SpecError
from quantuna.results import collect_results, pareto_front
from quantuna.study import attrs
from quantuna.study.confirm import _tagged, candidates
from quantuna.study.cpus import MEASURED_ON, cpu_of
from quantuna.summary import show_payload, summarize

NAMES = ["accuracy", "performance", "modelsize"]
HIGHER = [True, False, False]
FP32_MS = 0.05
VNNI = {"cpu": "Xeon Gold 6230", "cpu_isa": ["avx2", "avx512f", "avx512_vnni"], "host": "a"}
PLAIN = {"cpu": "Xeon Gold 6230", "cpu_isa": ["avx2"], "host": "b"}  # a VM that hides AVX-512
OTHER = {"cpu": "EPYC 7B13", "cpu_isa": ["avx2"], "host": "c"}


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The host reading the study: by default a CPU that timed nothing of it."""
    facts = dict(OTHER)
    monkeypatch.setattr(attrs, "host_facts", lambda: dict(facts))
    return facts


def session(mode: str = "pareto") -> Any:
    performance = SimpleNamespace(threads=1, timed_rounds=10, runs_per_round=100)
    criterion = SimpleNamespace(as_dict=lambda: {"absolute": 0.01})
    spec = SimpleNamespace(name="mixed", storage="sqlite:///mixed.db", tuning=SimpleNamespace(
        accuracy_criterion=criterion), measure=SimpleNamespace(performance=performance))
    return SimpleNamespace(spec=spec, metric=SimpleNamespace(name="top1", higher_is_better=True),
                           mode=mode, objective_names=NAMES, higher_is_better=HIGHER,
                           weights=[0.8, 0.1, 0.1], objective_label=lambda n: n)


def user_attrs(number: int, facts: dict[str, Any], *, ratio: float, size: float, acc: float = 0.95,
               fp32_ms: float = FP32_MS, reused_from: Any = None) -> dict[str, Any]:
    fp32 = reused_from == "baseline"
    config = QuantConfig() if fp32 else QuantConfig(approach="static", op_types=("Conv",), calibrate_method="MinMax",
                                                   calibration_size=10 + number)
    ms = fp32_ms * ratio
    return {
        **facts, attrs.THREADS: {"latency": 1, "accuracy": 0},
        attrs.CONFIG: config.to_dict(), attrs.SUMMARY: f"t{number}",
        attrs.VALUES: {"accuracy": acc, "performance": ms, "modelsize": size},
        attrs.RELATIVE: {"accuracy": acc / 0.95, "performance": ratio, "modelsize": size},
        attrs.LATENCY: {"ms": ms, "fp32_ms": fp32_ms, "ratio": ratio, "low": ratio - 0.02,
                        "high": ratio + 0.02, "rounds": 10, "runs": 100},
        attrs.CONSTRAINT: 0.94 - acc, attrs.FEASIBLE: acc >= 0.94, attrs.REUSED_FROM: reused_from,
        attrs.MODEL_SHA256: "fp32" if fp32 else f"sha{number}", attrs.MODEL_BYTES: 1000,
    }


def make_study(rows: list[dict[str, Any]], *, mode: str = "pareto",
               scores: list[float] | None = None) -> optuna.Study:
    directions = ["maximize"] if mode == "weighted" else ["maximize", "minimize", "minimize"]
    study = optuna.create_study(directions=directions)
    study.set_user_attr(attrs.BASELINE, {
        "values": {"accuracy": 0.95, "performance": FP32_MS, "modelsize": 1.0},
        "accuracy_target": 0.94, **VNNI, attrs.THREADS: {"latency": 1, "accuracy": 0}})
    study.set_user_attr(attrs.SETUP, {"objectives": NAMES, "higher_is_better": HIGHER, "mode": mode})
    for i, row in enumerate(rows):
        values = row[attrs.VALUES]
        kwargs: dict[str, Any] = ({"value": (scores or [0.0] * len(rows))[i]} if mode == "weighted"
                                  else {"values": [values[n] for n in NAMES]})
        study.add_trial(optuna.create_trial(**kwargs, user_attrs=row))
    return study


def mixed_rows() -> list[dict[str, Any]]:
    """fp32, three trials on the VNNI host (int8 pays) and two on a host without VNNI where
    every ratio is lower only because its fp32 is slow: compared across CPUs, trial 4 would
    dominate the VNNI front."""
    return [
        user_attrs(0, VNNI, ratio=1.0, size=1.0, reused_from="baseline"),
        user_attrs(1, VNNI, ratio=0.60, size=0.50),
        user_attrs(2, VNNI, ratio=0.80, size=0.30),
        user_attrs(3, VNNI, ratio=0.85, size=0.60),  # dominated by 1 on VNNI
        user_attrs(4, PLAIN, ratio=0.40, size=0.30, fp32_ms=0.2),
        user_attrs(5, PLAIN, ratio=0.55, size=0.25, fp32_ms=0.2),
    ]


def test_a_mixed_study_compares_one_cpu_and_says_so() -> None:
    study = make_study(mixed_rows())
    result = collect_results(study, session())
    vnni, plain = cpu_of({**VNNI, attrs.THREADS: {"latency": 1}}), cpu_of({**PLAIN, attrs.THREADS: {"latency": 1}})
    assert vnni is not None and plain is not None and vnni != plain  # the ISA is in the key
    assert result.cpus is not None and result.cpus.reference == vnni
    assert result.cpus.why == "the CPU that timed the most trials"
    assert {t.number for t in result.comparable} == {0, 1, 2, 3}
    assert [t.number for t in result.pareto] == [1, 2]
    assert result.pick().trial.number in (1, 2)
    # the same trials compared across CPUs would report another front and pick trial 4 or 5
    across = pareto_front(result.trials, NAMES, HIGHER)
    assert [t.number for t in across] == [4, 5]
    assert replace(result, cpus=None, pareto=across).pick().trial.number in (4, 5)

    line = summarize(result).facts["cpus"]
    assert line.startswith("latencies compared only among the 3 trials timed on Xeon Gold 6230 "
                           "(avx2, avx512f, avx512_vnni; 1 thread)")
    assert f"[--cpu {vnni.id}] (the CPU that timed the most trials)" in line
    assert f"Xeon Gold 6230 (avx2; 1 thread) [--cpu {plain.id}]: 2 trials" in line
    assert "see another CPU's front with --cpu <id>" in line
    assert line in summarize(result).to_text() and "\n" not in line
    payload = json.loads(json.dumps(show_payload(result)))
    assert payload["cpus"]["reference"]["id"] == vnni.id and payload["cpus"]["note"] == line
    assert [(c["id"], c["trials"]) for c in payload["cpus"]["cpus"]] == [(vnni.id, 3), (plain.id, 2)]
    assert {t["cpu"] for t in payload["pareto"]} == {vnni.id}


def test_the_other_cpus_front_is_one_option_away() -> None:
    study = make_study(mixed_rows())
    plain = cpu_of({**PLAIN, attrs.THREADS: {"latency": 1}})
    assert plain is not None
    for query in (plain.id, plain.id[:4], "(avx2; 1"):
        result = collect_results(study, session(), cpu=query)
        assert result.cpus is not None and result.cpus.reference == plain
        assert result.cpus.why == "chosen with --cpu"
        assert [t.number for t in result.pareto] == [4, 5]
        # fp32 as timed on that CPU: the fp32 sessions its trials were interleaved with
        assert result.cpus.fp32_ms == pytest.approx(0.2)
        assert summarize(result).rows[0][2] == "0.2"
        assert "3 trials" in summarize(result).facts["cpus"]
    with pytest.raises(SpecError, match="matches several CPUs"):  # an input error: exit 2
        collect_results(study, session(), cpu="xeon")
    with pytest.raises(SpecError, match=f"names no CPU that timed a trial; the study's CPUs: .*{plain.id}"):
        collect_results(study, session(), cpu="EPYC")


def test_this_host_and_the_confirm_phase_decide_the_reference(host: dict[str, Any]) -> None:
    study = make_study(mixed_rows())
    host.update(PLAIN)  # `show` on the host without VNNI: its own trials
    result = collect_results(study, session())
    assert result.cpus is not None and result.cpus.why == "this host's CPU"
    assert [t.number for t in result.pareto] == [4, 5]
    # the confirm phase ran on the VNNI host and re-timed trial 5 there: VNNI is the reference,
    # and trial 5 now has VNNI figures (it joins VNNI's trials), whoever reads the study
    figures = {"ms": 0.045, "fp32_ms": 0.048, "ratio": 0.94, "low": 0.92, "high": 0.96,
               "rounds": 10, "runs": 100}
    study.set_user_attr(attrs.CONFIRMED, {"fp32": {"ms": 0.048}, "trials": {"5": figures},
                                          "rounds": 10, **VNNI, attrs.THREADS: {"latency": 1}})
    result = collect_results(study, session())
    assert result.cpus is not None and result.cpus.why == "the CPU the confirm phase ran on"
    assert {t.number for t in result.comparable} == {0, 1, 2, 3, 5}
    assert result.cpus.fp32_ms == 0.048 and summarize(result).rows[0][2] == "0.048"
    assert [t.number for t in result.pareto] == [1, 2, 5]
    other = collect_results(study, session(), cpu="(avx2; 1")  # the confirm phase did not run there
    assert "not confirmed on this CPU (the confirm phase ran on Xeon Gold 6230 (avx2, avx512f" in \
        summarize(other).facts["latency"]
    assert [t.number for t in other.pareto] == [4]  # 5's figures are VNNI's now


def test_a_reused_measurement_belongs_to_the_cpu_that_timed_it() -> None:
    rows = mixed_rows()
    # trial 6 ran on the host without VNNI and reused trial 1's measurement (same config)
    reused = {**user_attrs(6, PLAIN, ratio=0.60, size=0.50), attrs.REUSED_FROM: 1}
    reused[attrs.CONFIG] = rows[1][attrs.CONFIG]
    result = collect_results(make_study([*rows, reused]), session())
    assert result.cpus is not None
    assert next(t for t in result.trials if t.number == 6).cpu == result.cpus.reference
    assert result.cpus.trials[result.cpus.reference] == 4


def test_weighted_score_pick_and_confirm_candidates_stay_on_one_cpu() -> None:
    rows = mixed_rows()
    study = make_study(rows, mode="weighted", scores=[0.80, 0.90, 0.85, 0.82, 0.99, 0.95])
    result = collect_results(study, session("weighted"))
    assert result.pick("score").trial.number == 1  # 4 scores higher on a CPU with a slow fp32
    assert result.pick("weighted").trial.number in (1, 2)
    assert result.pick("best:performance").trial.number == 1
    pareto = collect_results(make_study(rows), session())
    assert {t.number for t in candidates(pareto, 8)} <= {1, 2, 3}


def test_no_feasible_trial_on_the_reference_cpu_says_where_they_are() -> None:
    rows = [user_attrs(0, VNNI, ratio=0.6, size=0.5, acc=0.90),
            user_attrs(1, VNNI, ratio=0.7, size=0.5, acc=0.91),
            user_attrs(2, PLAIN, ratio=0.5, size=0.5, fp32_ms=0.2)]
    pick = collect_results(make_study(rows), session()).pick()
    assert not pick.feasible and pick.trial.number == 1
    assert pick.reason.startswith("no trial timed on Xeon Gold 6230 (avx2, avx512f, avx512_vnni; "
                                  "1 thread) meets the accuracy target (1 timed on other CPUs do")


def test_a_single_cpu_study_is_unchanged() -> None:
    rows = [r for r in mixed_rows() if r["host"] == "a"]
    result = collect_results(make_study(rows), session())
    assert result.cpus is not None and not result.cpus.mixed
    assert result.comparable == result.trials
    assert [t.number for t in result.pareto] == [t.number for t in pareto_front(result.trials, NAMES, HIGHER)]
    plain = replace(result, cpus=None)
    for rule in ("weighted", "best:performance", "best:modelsize"):
        assert result.pick(rule) == plain.pick(rule)
    summary = summarize(result)
    assert "cpus" not in summary.facts and "--cpu" not in summary.to_text()
    assert summary.rows[0][2] == "0.05"  # the baseline's own fp32 figure
    assert show_payload(result)["cpus"]["note"] == ""


def test_the_progress_bar_shows_the_best_trial_of_this_hosts_cpu(host: dict[str, Any]) -> None:
    study = make_study(mixed_rows())
    host.update(VNNI)
    assert Progress(enabled=False).best_text(study).startswith("best on this CPU #")
    assert "#4" not in Progress(enabled=False).best_text(study)
    host.update(PLAIN)
    assert Progress(enabled=False).best_text(study).startswith("best on this CPU #4")
    single = make_study([r for r in mixed_rows() if r["host"] == "a"])
    assert Progress(enabled=False).best_text(single).startswith("best #")


def test_a_later_confirm_on_another_cpu_keeps_the_earlier_figures_apart() -> None:
    earlier = {"trials": {"3": {"ratio": 0.9}}, **VNNI, attrs.THREADS: {"latency": 1}}
    tagged = _tagged(earlier)
    assert cpu_of(tagged["3"][MEASURED_ON]) == cpu_of(earlier)
    assert _tagged({"trials": tagged, **PLAIN}) == tagged  # a tag, once set, stays


def test_the_report_says_its_optuna_figures_plot_every_cpu() -> None:
    from quantuna.views.report import render_html

    page = render_html(collect_results(make_study(mixed_rows()), session()))
    assert "latencies compared only among the 3 trials timed on" in page
    assert "plot every trial, timed on 2 CPUs whose latencies do not compare" in page
    single = render_html(collect_results(make_study([r for r in mixed_rows() if r["host"] == "a"]), session()))
    assert "do not compare" not in single and "--cpu" not in single
