"""What a study found: ``TrialResult`` records, the reported front, and the pick rules.

Latency figures: each trial's latency was timed interleaved with fp32 (a ratio with a 95 %
interval); at the end of a run the confirm phase re-times the front and fp32 together
(:mod:`quantuna.study.confirm`). Optuna's values of a finished trial cannot change, so the
confirmed figures live in the study's ``confirmed`` user attr; every ``TrialResult`` of a
confirmed trial reports them (``values["performance"]`` in ms, ``relative`` and ``latency``), and
so do the CLI, the study note, the report, the export and the pick rules.

Pick rules (``TuneResult.pick(rule)``):

- ``weighted`` (default): Neural Compressor's ``best_result`` over the candidates (the feasible
  Pareto set in pareto mode, every measured trial in weighted mode), latency as its ratio to
  fp32; candidates slower than fp32 (their whole interval above 1) are set aside, so the pick is
  never slower than fp32.
- ``best:<objective>``: the feasible trial best on that objective (ties: higher accuracy); when it
  is slower than fp32 the pick's ``note`` says so.
- ``score``: weighted mode only, the trial with the highest Optuna value (sum of baseline ratios).

When no trial meets the accuracy target every rule returns the best effort: the trial closest to
the target among the fully measured ones, ``feasible=False`` and the ``reason``. A trial stopped
early (its accuracy pass proved the target out of reach) is complete, infeasible and marked
``stopped_early``: it is never on the front and never picked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import optuna

from quantuna.config import QuantConfig
from quantuna.errors import QuantunaError, SpecError
from quantuna.front import Point, reported_front
from quantuna.objective import MultiObjective
from quantuna.study import attrs
from quantuna.study.cpus import MEASURED_ON, Cpu, CpuView, cpu_of, measured_on, view_of

if TYPE_CHECKING:
    from quantuna.study.session import Session

LATENCY = "performance"  # the objective whose values carry an interval


@dataclass(frozen=True)
class TrialResult:
    """One measured trial, as quantuna reads it from Optuna (confirmed latency when there is one).

    Attributes:
        latency: ``ms``, ``fp32_ms``, ``ratio``, ``low``, ``high`` (95 % interval), ``rounds``,
            ``runs``: the confirmed figures when ``confirmed``, else the trial's own.
        confirmed: whether the latency comes from the confirm phase.
        model_bytes: the quantized file's size in bytes.
        cpu: the CPU that timed :attr:`latency` (None: the fp32 model, the reference on every
            CPU); latencies compare only on one CPU (:mod:`quantuna.study.cpus`).
        stopped_early: its accuracy pass stopped once the target was out of reach: the accuracy
            is the metric on the samples seen (see the trial's ``stopped_early`` attr).
    """

    number: int
    config: QuantConfig
    values: dict[str, float]
    relative: dict[str, float | None]
    constraint: float
    feasible: bool
    reused_from: int | str | None
    summary: str
    model_sha256: str | None
    latency: dict[str, Any] | None = None
    confirmed: bool = False
    model_bytes: int | None = None
    cpu: Cpu | None = None
    stopped_early: bool = False

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial,
                   confirmed: dict[str, Any] | None = None) -> TrialResult:
        """Read quantuna's user attrs of a complete trial; ``confirmed`` figures override latency."""
        stored = trial.user_attrs
        result = cls(
            number=trial.number,
            # a config that quantized nothing is the fp32 model, and is reported as such
            config=QuantConfig() if stored.get(attrs.AS_FP32) else QuantConfig.from_dict(stored[attrs.CONFIG]),
            values=dict(stored[attrs.VALUES]),
            relative=dict(stored.get(attrs.RELATIVE, {})),
            constraint=float(stored[attrs.CONSTRAINT]),
            feasible=bool(stored[attrs.FEASIBLE]),
            reused_from=stored.get(attrs.REUSED_FROM),
            summary=stored.get(attrs.SUMMARY, ""),
            model_sha256=stored.get(attrs.MODEL_SHA256),
            latency=stored.get(attrs.LATENCY),
            model_bytes=stored.get(attrs.MODEL_BYTES),
            stopped_early=attrs.STOP_REASON in stored,
        )
        return result.with_confirmed(confirmed) if confirmed else result

    def with_confirmed(self, figures: dict[str, Any]) -> TrialResult:
        """This trial reporting the confirm phase's latency figures."""
        values, relative = dict(self.values), dict(self.relative)
        if LATENCY in values:
            values[LATENCY] = float(figures["ms"])
            relative[LATENCY] = float(figures["ratio"])
        return replace(self, values=values, relative=relative, latency=dict(figures), confirmed=True)

    @property
    def ratio(self) -> float | None:
        """Latency relative to fp32 (interleaved, confirmed when possible), None without latency."""
        if self.latency is not None:
            return float(self.latency["ratio"])
        return self.relative.get(LATENCY)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95 % interval of :attr:`ratio`, None when the trial has none."""
        if self.latency is None:
            return None
        return float(self.latency["low"]), float(self.latency["high"])

    @property
    def slower_than_fp32(self) -> bool:
        """Slower than fp32 beyond the noise: its whole interval lies above 1."""
        if self.interval is not None:
            return self.interval[0] > 1.0
        return self.ratio is not None and self.ratio > 1.0

    @property
    def simplicity(self) -> tuple[Any, ...]:
        """Sorts simpler configs first: fewer quantized op types and nodes, smaller file, earlier."""
        kept = len(self.config.exclude_nodes) + bool(self.config.first_node_fp32) + bool(self.config.last_node_fp32)
        quantized = 0 if self.config.is_fp32 else len(self.config.op_types)
        return (quantized, -kept if quantized else 0, self.model_bytes or 0, self.number)


@dataclass(frozen=True)
class Pick:
    """The trial a rule chose, and why.

    Attributes:
        reason: why the pick does not meet the accuracy target ("" when it does).
        note: what else a reader must know (e.g. the rule picked a trial slower than fp32).
    """

    trial: TrialResult
    rule: str
    feasible: bool
    score: float | None = None
    reason: str = ""
    note: str = ""


@dataclass
class TuneResult:
    """The outcome of :func:`quantuna.tune`.

    Attributes:
        study: the ``optuna.Study``, nothing hidden.
        baseline: the fp32 baseline (values, accuracy target, host).
        trials: every complete trial.
        pareto: the feasible reported front (noise-aware, one point per model and per tie).
        confirmed: the confirm phase's record (fp32 and trial figures), None when not run.
        cpus: the CPUs that timed the trials and the reference CPU the front and the pick
            compare (:mod:`quantuna.study.cpus`); None without a latency objective.
    """

    study: optuna.Study
    mode: str
    objective_names: list[str]
    higher_is_better: list[bool]
    weights: list[float]
    accuracy_criterion: dict[str, Any]
    baseline: dict[str, Any]
    trials: list[TrialResult] = field(default_factory=list)
    pareto: list[TrialResult] = field(default_factory=list)
    session: Session | None = None
    confirmed: dict[str, Any] | None = None
    cpus: CpuView | None = None

    @property
    def comparable(self) -> list[TrialResult]:
        """The trials the front and the pick compare: those timed on the reference CPU and the
        fp32 trial (every trial when one CPU timed them all, or without a latency objective)."""
        if self.cpus is None:
            return self.trials
        return [t for t in self.trials if t.cpu is None or t.cpu == self.cpus.reference]

    @property
    def failed(self) -> list[optuna.trial.FrozenTrial]:
        """Trials that failed, each with its ``fail_reason`` user attr."""
        return self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))

    @property
    def stopped_early(self) -> list[optuna.trial.FrozenTrial]:
        """Trials stopped early as hopeless, each with its ``stop_reason`` user attr: complete
        and infeasible (an older quantuna left them PRUNED, with no values: counted too)."""
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return [t for t in self.study.get_trials(deepcopy=False, states=states)
                if attrs.STOP_REASON in t.user_attrs]

    @property
    def pruned(self) -> list[optuna.trial.FrozenTrial]:
        """Trials the study's pruner stopped (weighted mode), each with its ``prune_reason``."""
        return [t for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
                if attrs.STOP_REASON not in t.user_attrs]

    def best(self, rule: str = "weighted") -> TrialResult:
        """The trial ``rule`` picks (see the module docs)."""
        return self.pick(rule).trial

    def pick(self, rule: str = "weighted") -> Pick:
        """Pick one trial by ``rule``; says whether it meets the accuracy target and why not."""
        if not self.trials:
            raise QuantunaError("the study has no complete trial yet; run it first")
        if rule not in ("weighted", "score") and not rule.startswith("best:"):
            raise QuantunaError(f"unknown pick rule {rule!r}: use weighted, score or best:<objective>")
        name = rule.removeprefix("best:") if rule.startswith("best:") else None
        if name is not None and name not in self.objective_names:
            raise QuantunaError(f"pick rule {rule!r}: objective {name!r} is not one of {self.objective_names}")
        if rule == "score" and self.mode != "weighted":
            raise QuantunaError("rule 'score' needs a weighted study; use weighted or best:<objective>")
        if not any(t.feasible for t in self.comparable):
            return self._best_effort(rule)
        if rule == "weighted":
            return self._weighted_pick()
        if rule == "score":
            best = self._best_score()
            chosen = next(t for t in self.trials if t.number == best.number)
            return Pick(chosen, rule, chosen.feasible, best.value, note=self._slower_note(chosen, rule))
        assert name is not None
        higher = self.higher_is_better[self.objective_names.index(name)]
        sign = 1 if higher else -1
        pool = [t for t in self.comparable if t.feasible]
        chosen = max(pool, key=lambda t: (sign * self._value(t, name), t.values["accuracy"], -t.number))
        return Pick(chosen, rule, True, note=self._slower_note(chosen, rule))

    def _best_score(self) -> optuna.trial.FrozenTrial:
        """The trial with the highest Optuna value (the weighted score) on the reference CPU."""
        if self.cpus is None or not self.cpus.mixed:
            return self.study.best_trial
        numbers = {t.number for t in self.comparable}
        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return max((t for t in done if t.number in numbers and t.value is not None),
                   key=lambda t: (float(t.value or 0.0), -t.number))

    def _value(self, t: TrialResult, name: str) -> float:
        """An objective value as rules compare it: latency as its ratio to fp32 when known."""
        if name == LATENCY and t.ratio is not None:
            return t.ratio
        return t.values[name]

    def _slower_note(self, chosen: TrialResult, rule: str) -> str:
        if LATENCY not in self.objective_names or not chosen.slower_than_fp32:
            return ""
        return (f"trial {chosen.number} is slower than fp32 ({_ratio_text(chosen)}); rule {rule} "
                "asks for another objective")

    def _weighted_pick(self) -> Pick:
        pool = self.pareto if (self.mode == "pareto" and self.pareto) else [
            t for t in self.comparable if not t.stopped_early]
        note = ""
        if LATENCY in self.objective_names:
            fast = [t for t in pool if not t.slower_than_fp32]
            if not fast:  # the fp32 trial is never slower than itself
                fast = [t for t in self.comparable if t.config.is_fp32 and t.feasible]
            if fast and len(fast) < len(pool):
                slow = sorted(t.number for t in pool if t.slower_than_fp32)
                note = f"set aside as slower than fp32: trial {', '.join(map(str, slow))}"
            pool = fast or pool
        pick = self._inc_pick(pool)
        return replace(pick, note=note)

    def _inc_pick(self, candidates: list[TrialResult]) -> Pick:
        chooser = MultiObjective(
            self.objective_names,
            self.accuracy_criterion,
            obj_criterion=self.higher_is_better,
            obj_weight=self.weights,
        )
        base = dict(self.baseline["values"])
        by_ratio = LATENCY in self.objective_names and all(t.ratio is not None for t in candidates)
        if by_ratio:
            base[LATENCY] = 1.0  # fp32's latency, as a ratio to itself
        elif LATENCY in base and self.cpus is not None and self.cpus.fp32_ms is not None:
            base[LATENCY] = self.cpus.fp32_ms  # in ms, as timed on the reference CPU
        names = self.objective_names

        def row(t: TrialResult) -> list[float]:
            return [self._value(t, n) if by_ratio else t.values[n] for n in names]

        tune_data = [[t.values["accuracy"], row(t)] for t in candidates]
        result = chooser.best_result(tune_data, (base["accuracy"], [base[n] for n in names]))
        return Pick(candidates[result.index], "weighted", result.feasible, result.scores[result.index])

    def _best_effort(self, rule: str) -> Pick:
        """No trial meets the target: the one closest to it (then faster, then simpler), among
        the fully measured trials (one stopped early has only an estimate of its accuracy)."""
        pool = [t for t in self.comparable if not t.stopped_early] or self.comparable
        chosen = min(pool, key=lambda t: (t.constraint, t.ratio or 0.0, t.simplicity))
        target = self.baseline.get("accuracy_target")
        which = "no trial meets the accuracy target"
        elsewhere = sum(1 for t in self.trials if t.feasible)
        if elsewhere and self.cpus is not None:  # feasible trials were timed on other CPUs
            which = (f"no trial timed on {self.cpus.reference.label} meets the accuracy target "
                     f"({elsewhere} timed on other CPUs do: see --cpu)")
        reason = (f"{which}; best effort: trial {chosen.number} "
                  f"(accuracy {chosen.values['accuracy']:.4g}, target {target:.4g})")
        return Pick(chosen, rule, False, reason=reason)


def _ratio_text(t: TrialResult) -> str:
    if t.ratio is None:
        return "no latency"
    interval = f" [{t.interval[0]:.3f}, {t.interval[1]:.3f}]" if t.interval else ""
    return f"x{t.ratio:.3f}{interval} fp32"


def _point(t: TrialResult, names: list[str]) -> Point:
    values, intervals = [], []
    for n in names:
        if n == LATENCY and t.ratio is not None:
            values.append(t.ratio)
            intervals.append(t.interval)
        else:
            values.append(t.values[n])
            intervals.append(None)
    return Point(t.number, tuple(values), tuple(intervals), t.model_sha256, t.simplicity)


def pareto_front(trials: list[TrialResult], names: list[str], higher: list[bool]) -> list[TrialResult]:
    """The feasible reported front (see :mod:`quantuna.front`): noise-aware, one point per
    distinct model (configs whose quantized files are byte-identical are one point)."""
    distinct: dict[str, TrialResult] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.feasible:
            distinct.setdefault(t.config.key(), t)
    by_number = {t.number: t for t in distinct.values()}
    kept = reported_front([_point(t, names) for t in distinct.values()], higher)
    return [by_number[p.key] for p in kept]


def collect_results(study: optuna.Study, session: Session, cpu: str | None = None) -> TuneResult:
    """Read a study's trials into a :class:`TuneResult` (confirmed latency where confirmed).

    ``cpu`` (an id or part of a label, see :mod:`quantuna.study.cpus`): the CPU whose trials the
    front and the pick compare; default: the module's rule.
    """
    everything = study.get_trials(deepcopy=False)
    by_number = {t.number: t.user_attrs for t in everything}
    confirmed = study.user_attrs.get(attrs.CONFIRMED)
    figures = (confirmed or {}).get("trials", {})
    threads = session.spec.measure.performance.threads
    confirm_cpu = cpu_of(confirmed, threads) if confirmed else None
    trials = []
    for t in everything:
        if t.state != optuna.trial.TrialState.COMPLETE or attrs.VALUES not in t.user_attrs:
            continue
        own = figures.get(str(t.number))
        where = measured_on(t.user_attrs, by_number, threads)
        if own:
            where = cpu_of(own[MEASURED_ON], threads) if own.get(MEASURED_ON) else confirm_cpu
        read = TrialResult.from_trial(t, own)
        trials.append(replace(read, cpu=None if read.config.is_fp32 else where))
    if confirmed and confirmed.get("fp32"):  # the fp32 model is the reference: ratio 1, exactly
        reference = {**confirmed["fp32"], "fp32_ms": confirmed["fp32"]["ms"], "ratio": 1.0,
                     "low": 1.0, "high": 1.0}
        trials = [t.with_confirmed(reference) if t.config.is_fp32 else t for t in trials]
    criterion = dict(session.spec.tuning.accuracy_criterion.as_dict())
    criterion["higher_is_better"] = session.metric.higher_is_better
    result = TuneResult(
        study=study,
        mode=session.mode,
        objective_names=list(session.objective_names),
        higher_is_better=list(session.higher_is_better),
        weights=list(session.weights),
        accuracy_criterion=criterion,
        baseline=dict(study.user_attrs.get(attrs.BASELINE, {})),
        trials=trials,
        session=session,
        confirmed=confirmed,
    )
    if LATENCY in result.objective_names:
        result = _on_one_cpu(result, cpu, confirm_cpu, threads)
    elif cpu is not None:
        raise SpecError(f"--cpu {cpu!r}: the study has no performance objective, so no latency to compare")
    result.pareto = pareto_front(result.comparable, result.objective_names, result.higher_is_better)
    return result


def _on_one_cpu(result: TuneResult, asked: str | None, confirm_cpu: Cpu | None,
                threads: int) -> TuneResult:
    """The result with its :class:`CpuView` (the reference CPU, fp32's latency on it)."""
    view = view_of(result.trials, result.baseline, result.confirmed, confirm_cpu,
                   asked=asked, threads=threads, latency=LATENCY)
    if view is None:
        return result
    trials = result.trials
    if view.fp32_ms is not None:  # the fp32 trial reports fp32 as timed on the reference CPU
        trials = [replace(t, values={**t.values, LATENCY: view.fp32_ms}) if t.config.is_fp32 else t
                  for t in trials]
    return replace(result, trials=trials, cpus=view)
