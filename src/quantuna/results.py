"""What a study found: ``TrialResult`` records, the feasible Pareto set, and the pick rules.

Pick rules (``TuneResult.pick(rule)``):

- ``weighted`` (default): Neural Compressor's ``best_result``: over the candidates (the feasible
  Pareto set in pareto mode, every measured trial in weighted mode) each objective is normalised
  to [0, 1] against the baseline and weighted; trials missing the accuracy target score 0.
- ``best:<objective>``: the feasible trial best on that objective (ties: higher accuracy).
- ``score``: weighted mode only, the trial with the highest Optuna value (sum of baseline ratios).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from quantuna.config import QuantConfig
from quantuna.errors import QuantunaError
from quantuna.objective import MultiObjective
from quantuna.spec import redact_url

if TYPE_CHECKING:
    from quantuna.study.session import Session


@dataclass(frozen=True)
class TrialResult:
    """One measured trial, as quantuna reads it from Optuna."""

    number: int
    config: QuantConfig
    values: dict[str, float]
    relative: dict[str, float | None]
    constraint: float
    feasible: bool
    reused_from: int | str | None
    summary: str
    model_sha256: str | None

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialResult:
        """Read quantuna's user attrs of a complete trial."""
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            # a config that quantized nothing is the fp32 model, and is reported as such
            config=QuantConfig() if attrs.get("is_fp32") else QuantConfig.from_dict(attrs["config"]),
            values=dict(attrs["values"]),
            relative=dict(attrs.get("relative", {})),
            constraint=float(attrs["constraint"]),
            feasible=bool(attrs["feasible"]),
            reused_from=attrs.get("reused_measurement_from"),
            summary=attrs.get("summary", ""),
            model_sha256=attrs.get("model_sha256"),
        )


@dataclass(frozen=True)
class Pick:
    """The trial a rule chose, and why."""

    trial: TrialResult
    rule: str
    feasible: bool
    score: float | None = None


@dataclass
class TuneResult:
    """The outcome of :func:`quantuna.tune`.

    Attributes:
        study: the ``optuna.Study``, nothing hidden.
        baseline: the fp32 baseline (values, accuracy target, host).
        trials: every complete trial.
        pareto: the feasible Pareto trials (one per distinct config).
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

    @property
    def failed(self) -> list[optuna.trial.FrozenTrial]:
        """Trials that failed, each with its ``fail_reason`` user attr."""
        return self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))

    @property
    def stopped_early(self) -> list[optuna.trial.FrozenTrial]:
        """Trials pruned as hopeless, each with its ``stop_reason`` user attr."""
        return [
            t for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
            if "stop_reason" in t.user_attrs
        ]

    def best(self, rule: str = "weighted") -> TrialResult:
        """The trial ``rule`` picks (see the module docs)."""
        return self.pick(rule).trial

    def pick(self, rule: str = "weighted") -> Pick:
        """Pick one trial by ``rule``; says whether it meets the accuracy target."""
        if not self.trials:
            raise QuantunaError("the study has no complete trial yet; run it first")
        if rule == "weighted":
            candidates = self.pareto if (self.mode == "pareto" and self.pareto) else self.trials
            return self._inc_pick(candidates)
        if rule == "score":
            if self.mode != "weighted":
                raise QuantunaError("rule 'score' needs a weighted study; use weighted or best:<objective>")
            number = self.study.best_trial.number
            chosen = next(t for t in self.trials if t.number == number)
            return Pick(chosen, rule, chosen.feasible, self.study.best_trial.value)
        if rule.startswith("best:"):
            name = rule.removeprefix("best:")
            if name not in self.objective_names:
                raise QuantunaError(f"pick rule {rule!r}: objective {name!r} is not one of {self.objective_names}")
            higher = self.higher_is_better[self.objective_names.index(name)]
            pool = [t for t in self.trials if t.feasible] or self.trials
            sign = 1 if higher else -1
            chosen = max(pool, key=lambda t: (sign * t.values[name], t.values["accuracy"], -t.number))
            return Pick(chosen, rule, chosen.feasible)
        raise QuantunaError(f"unknown pick rule {rule!r}: use weighted, score or best:<objective>")

    def _inc_pick(self, candidates: list[TrialResult]) -> Pick:
        chooser = MultiObjective(
            self.objective_names,
            self.accuracy_criterion,
            obj_criterion=self.higher_is_better,
            obj_weight=self.weights,
        )
        base = self.baseline["values"]
        tune_data = [[t.values["accuracy"], [t.values[n] for n in self.objective_names]] for t in candidates]
        result = chooser.best_result(tune_data, (base["accuracy"], [base[n] for n in self.objective_names]))
        return Pick(candidates[result.index], "weighted", result.feasible, result.scores[result.index])


def format_value(value: Any) -> str:
    """Numbers at four significant digits, ``None`` as empty: how every table shows values."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def objective_labels(result: TuneResult) -> list[str]:
    """Each objective's name with its unit (``performance [ms]``), in both study modes."""
    if result.session is None:
        return list(result.objective_names)
    return [result.session.objective_label(n) for n in result.objective_names]


def pareto_rows(result: TuneResult) -> tuple[list[str], list[list[str]]]:
    """The fp32 baseline and the feasible Pareto trials as text: a header and rows.

    Each value carries its change relative to fp32; the last column is the config's summary.
    The CLI, the HTML report and the dashboard note all show this table.
    """
    names = result.objective_names
    base = result.baseline.get("values", {})
    header = ["trial", *objective_labels(result), "config"]
    rows = [["fp32", *[format_value(base.get(n)) for n in names], "baseline"]]
    for t in sorted(result.pareto, key=lambda t: t.number):
        cells = [str(t.number)]
        for n in names:
            rel = t.relative.get(n)
            delta = "" if rel is None else f" ({(rel - 1) * 100:+.1f}%)"
            cells.append(format_value(t.values[n]) + delta)
        reused = f" [reused #{t.reused_from}]" if isinstance(t.reused_from, int) else ""
        rows.append([*cells, t.summary + reused])
    return header, rows


def _dominates(a: list[float], b: list[float], higher: list[bool]) -> bool:
    better = False
    for x, y, h in zip(a, b, higher):
        x, y = (x, y) if h else (-x, -y)
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_front(trials: list[TrialResult], names: list[str], higher: list[bool]) -> list[TrialResult]:
    """The feasible, non-dominated trials, one per distinct model (the first trial of each):
    configs whose quantized files are byte-identical are one point."""
    distinct: dict[str, TrialResult] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.feasible:
            distinct.setdefault(t.model_sha256 or t.config.key(), t)
    pool = list(distinct.values())
    vecs = {t.number: [t.values[n] for n in names] for t in pool}
    return [
        t for t in pool
        if not any(_dominates(vecs[o.number], vecs[t.number], higher) for o in pool if o is not t)
    ]


def collect_results(study: optuna.Study, session: Session) -> TuneResult:
    """Read a study's trials into a :class:`TuneResult`."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    trials = [TrialResult.from_trial(t) for t in complete if "values" in t.user_attrs]
    criterion = dict(session.spec.tuning.accuracy_criterion.as_dict())
    criterion["higher_is_better"] = session.metric.higher_is_better
    return TuneResult(
        study=study,
        mode=session.mode,
        objective_names=list(session.objective_names),
        higher_is_better=list(session.higher_is_better),
        weights=list(session.weights),
        accuracy_criterion=criterion,
        baseline=dict(study.user_attrs.get("baseline", {})),
        trials=trials,
        pareto=pareto_front(trials, session.objective_names, session.higher_is_better),
        session=session,
    )


@dataclass(frozen=True)
class StudySummary:
    """What a study found, as text: the one summary the CLI, the report and the note render.

    Attributes:
        title: ``<study> (<mode>)``.
        facts: ordered one-line facts (``trials``, ``fp32 baseline``, ``accuracy target``,
            ``export pick``, ``storage``).
        header: the Pareto table's header (trial, objectives with units, config).
        rows: the fp32 row, then the feasible Pareto trials.
        failures: (trial numbers, reason) of failed trials, one entry per reason.
        has_front: whether any trial is on the feasible front.
    """

    title: str
    facts: dict[str, str]
    header: list[str]
    rows: list[list[str]]
    failures: list[tuple[list[int], str]]
    has_front: bool

    def table(self) -> str:
        """The Pareto table as aligned text."""
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [self.header, *self.rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_text(self) -> str:
        """The summary for a terminal."""
        lines = [f"study {self.title}"]
        lines += [f"{key}: {value}" for key, value in self.facts.items()]
        lines += ["", self.table() if self.has_front else NO_FEASIBLE]
        lines += [f"failed {', '.join(f'#{n}' for n in numbers[:8])}: {reason}"
                  for numbers, reason in self.failures]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The summary as Markdown (the optuna-dashboard study note)."""
        def md(text: str) -> str:
            return text.replace("|", "\\|")

        lines = [f"## quantuna: {self.title}", ""]
        lines += [f"- **{key}**: {md(value)}" for key, value in self.facts.items()]
        lines += ["", "### Feasible Pareto set", ""]
        if self.has_front:
            lines.append("| " + " | ".join(md(h) for h in self.header) + " |")
            lines.append("|" + "---|" * len(self.header))
            lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in self.rows]
        else:
            lines.append(NO_FEASIBLE)
        for numbers, reason in self.failures:
            lines.append(f"- failed {', '.join(f'#{n}' for n in numbers[:8])}: {md(reason)}")
        return "\n".join(lines) + "\n"


NO_FEASIBLE = "No trial meets the accuracy target yet."


def summarize(result: TuneResult) -> StudySummary:
    """The :class:`StudySummary` of a study's results."""
    session = result.session
    name = session.spec.name if session is not None else result.study.study_name
    metric = session.metric.name if session is not None else "accuracy"
    base = result.baseline.get("values", {})
    measured = sum(1 for t in result.trials if t.reused_from is None)
    feasible = sum(1 for t in result.trials if t.feasible)
    criterion = {k: v for k, v in result.accuracy_criterion.items() if k != "higher_is_better"}
    sign = ">=" if result.accuracy_criterion.get("higher_is_better", True) else "<="
    facts = {
        "trials": (
            f"{len(result.trials)} complete ({measured} measured, the rest reused; {feasible} "
            f"feasible), {len(result.stopped_early)} stopped early as hopeless, "
            f"{len(result.failed)} failed; {len(result.pareto)} on the feasible Pareto front"
        ),
        "fp32 baseline": ", ".join(
            f"{label} {format_value(base.get(n))}"
            for n, label in zip(result.objective_names, objective_labels(result))
        ),
        f"accuracy target ({metric})": (
            f"{sign} {format_value(result.baseline.get('accuracy_target'))} "
            f"(fp32 {format_value(base.get('accuracy'))}, criterion {criterion})"
        ),
    }
    if result.trials:
        pick = result.pick("weighted")
        facts["export pick"] = (
            f"trial {pick.trial.number} by Neural Compressor's weighted rule"
            + ("" if pick.feasible else " (does not meet the accuracy target)")
            + f": {pick.trial.summary}"
        )
    if session is not None:
        facts["storage"] = redact_url(session.spec.storage)
    reasons: dict[str, list[int]] = {}
    for t in result.failed:
        reason = str(t.user_attrs.get("fail_reason", "interrupted"))
        reasons.setdefault(reason[:160], []).append(t.number)
    header, rows = pareto_rows(result)
    return StudySummary(
        title=f"{name!r} ({result.mode})",
        facts=facts,
        header=header,
        rows=rows,
        failures=[(numbers, reason) for reason, numbers in reasons.items()],
        has_front=bool(result.pareto),
    )

