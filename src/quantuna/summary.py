"""The ONE summary of a study: what the CLI, the study note and the HTML report render.

Latency is shown as the median ms with its change relative to fp32 and the 95 % interval of that
ratio (``+2.1% [-0.8, +4.9]``); confirmed figures (the confirm phase's) replace a trial's own.
``show_payload`` is the same summary as data (``quantuna show --format json``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from quantuna._secrets import redact_url
from quantuna.results import LATENCY, Pick, TrialResult, TuneResult
from quantuna.study import attrs
from quantuna.study.cpus import cpu_of


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


def baseline_values(result: TuneResult) -> dict[str, Any]:
    """fp32's values as reported: its latency on the reference CPU (the confirm phase's when
    there was one)."""
    base = dict(result.baseline.get("values", {}))
    fp32 = (result.confirmed or {}).get("fp32")
    if result.cpus is not None and result.cpus.fp32_ms is not None and LATENCY in base:
        base[LATENCY] = float(result.cpus.fp32_ms)  # as timed on the CPU the trials compare on
    elif fp32 and LATENCY in base:
        base[LATENCY] = float(fp32["ms"])
    return base


def value_cell(t: TrialResult, name: str) -> str:
    """A value with its change relative to fp32 (latency: with the ratio's 95 % interval)."""
    rel = t.relative.get(name)
    if rel is None:
        return format_value(t.values[name])
    delta = f"{(rel - 1) * 100:+.1f}%"
    if name == LATENCY and t.interval is not None:
        low, high = t.interval
        delta += f" [{(low - 1) * 100:+.1f}, {(high - 1) * 100:+.1f}]"
    return f"{format_value(t.values[name])} ({delta})"


def pareto_rows(result: TuneResult) -> tuple[list[str], list[list[str]]]:
    """The fp32 baseline and the feasible Pareto trials as text: a header and rows.

    Each value carries its change relative to fp32; the last column is the config's summary.
    The CLI, the HTML report and the dashboard note all show this table.
    """
    names = result.objective_names
    base = baseline_values(result)
    header = ["trial", *objective_labels(result), "config"]
    rows = [["fp32", *[format_value(base.get(n)) for n in names], "baseline"]]
    for t in sorted(result.pareto, key=lambda t: t.number):
        cells = [str(t.number)] + [value_cell(t, n) for n in names]
        reused = f" [reused #{t.reused_from}]" if isinstance(t.reused_from, int) else ""
        rows.append([*cells, t.summary + reused])
    return header, rows


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
        best_effort: when no trial meets the target, the line naming the best-effort trial.
    """

    title: str
    facts: dict[str, str]
    header: list[str]
    rows: list[list[str]]
    failures: list[tuple[list[int], str]]
    has_front: bool
    best_effort: str = ""

    def table(self, width: int | None = None) -> str:
        """The Pareto table as aligned text; wider than ``width``, each config goes on its own
        indented line under its row (so an 80-column terminal does not wrap the table)."""
        lines = _aligned([self.header, *self.rows])
        if width is None or max(len(line) for line in lines) <= width or self.header[-1] != "config":
            return "\n".join(lines)
        narrow = _aligned([r[:-1] for r in [self.header, *self.rows]])
        out = narrow[:2]
        for line, row in zip(narrow[2:], self.rows):
            out += [line, f"  {row[-1]}"]
        return "\n".join(out)

    def to_text(self, width: int | None = None) -> str:
        """The summary for a terminal (``width``: its columns, see :meth:`table`)."""
        lines = [f"study {self.title}"]
        lines += [f"{key}: {value}" for key, value in self.facts.items()]
        lines += ["", self.table(width) if self.has_front else (self.best_effort or NO_FEASIBLE)]
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
            lines.append(md(self.best_effort or NO_FEASIBLE))
        for numbers, reason in self.failures:
            lines.append(f"- failed {', '.join(f'#{n}' for n in numbers[:8])}: {md(reason)}")
        return "\n".join(lines) + "\n"


NO_FEASIBLE = "No trial meets the accuracy target yet."


def _aligned(rows: list[list[str]]) -> list[str]:
    """Rows as left-aligned columns, two spaces apart, a rule under the first."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _latency_fact(result: TuneResult) -> str:
    p = result.session.spec.measure.performance if result.session is not None else None
    how = (f"median of {p.timed_rounds} rounds x {p.runs_per_round} runs, each round interleaved with "
           "fp32; +x% [95 % interval] is the ratio to fp32") if p is not None else ""
    confirmed = result.confirmed
    elsewhere = cpu_of(confirmed or {}, p.threads if p is not None else None)
    if confirmed and result.cpus is not None and elsewhere not in (None, result.cpus.reference):
        assert elsewhere is not None
        return f"{how}; not confirmed on this CPU (the confirm phase ran on {elsewhere.label}): the trials' own figures"
    if confirmed:
        shown = sorted(t.number for t in result.pareto if t.confirmed)
        numbers = ", ".join(str(n) for n in shown) or "none of the front"
        return (f"{how}; confirmed: trial {numbers} re-timed together with fp32 "
                f"({confirmed.get('rounds')} rounds), the figures shown")
    return f"{how}; not confirmed (the trials' own figures)"


def pick_text(result: TuneResult, pick: Pick) -> str:
    """One line about a pick: the trial, its values against fp32, and what the reader must know."""
    values = ", ".join(f"{n} {value_cell(pick.trial, n)}" for n in result.objective_names if n != "accuracy")
    if not pick.feasible:
        # the reason ends "(accuracy x, target y)": the other objectives join the parenthesis
        return f"{pick.reason[:-1]}, {values})" if values else pick.reason
    how = "Neural Compressor's weighted rule" if pick.rule == "weighted" else f"rule {pick.rule}"
    text = f"trial {pick.trial.number} by {how}: {pick.trial.summary}"
    return text + (f" ({pick.note})" if pick.note else "")


def summarize(result: TuneResult) -> StudySummary:
    """The :class:`StudySummary` of a study's results."""
    session = result.session
    name = session.spec.name if session is not None else result.study.study_name
    metric = session.metric.name if session is not None else "accuracy"
    base = baseline_values(result)
    measured = sum(1 for t in result.trials if t.reused_from is None)
    feasible = sum(1 for t in result.trials if t.feasible)
    pruned = len(result.pruned)
    criterion = {k: v for k, v in result.accuracy_criterion.items() if k != "higher_is_better"}
    sign = ">=" if result.accuracy_criterion.get("higher_is_better", True) else "<="
    facts = {
        "trials": (
            f"{len(result.trials)} complete ({measured} measured, the rest reused; {feasible} "
            f"feasible), {len(result.stopped_early)} stopped early as hopeless (infeasible), "
            + (f"{pruned} pruned, " if pruned else "")
            + f"{len(result.failed)} failed; {len(result.pareto)} on the feasible Pareto front"
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
    if LATENCY in result.objective_names:
        facts["latency"] = _latency_fact(result)
    if result.cpus is not None and result.cpus.mixed:
        facts["cpus"] = result.cpus.line()
    best_effort = ""
    if result.trials:
        pick = result.pick("weighted")
        best_effort = "" if pick.feasible else pick_text(result, pick)
        facts["export pick"] = pick_text(result, pick) if pick.feasible else (
            f"none meets the accuracy target; `quantuna export --allow-infeasible` writes the best "
            f"effort, trial {pick.trial.number}")
    if session is not None:
        facts["storage"] = redact_url(session.spec.storage)
    reasons: dict[str, list[int]] = {}
    for t in result.failed:
        reason = str(t.user_attrs.get(attrs.FAIL_REASON, "interrupted"))
        reasons.setdefault(reason[:160], []).append(t.number)
    header, rows = pareto_rows(result)
    return StudySummary(
        title=f"{name!r} ({result.mode})",
        facts=facts,
        header=header,
        rows=rows,
        failures=[(numbers, reason) for reason, numbers in reasons.items()],
        has_front=bool(result.pareto),
        best_effort=best_effort,
    )


def _trial_payload(t: TrialResult) -> dict[str, Any]:
    return {"trial": t.number, "values": t.values, "relative": t.relative, "latency": t.latency,
            "confirmed": t.confirmed, "feasible": t.feasible, "stopped_early": t.stopped_early,
            "config": t.config.to_dict(), "summary": t.summary, "model_sha256": t.model_sha256,
            "cpu": None if t.cpu is None else t.cpu.id}


def show_payload(result: TuneResult) -> dict[str, Any]:
    """``quantuna show --format json``: the pick (feasible or not, and why), the front, trial
    counts by Optuna state (``trials``) and of those stopped early as hopeless
    (``stopped_early``: COMPLETE and infeasible; PRUNED when an older quantuna stopped them),
    units, the storage, and the CPUs (which one the front compares, the others with their trial
    counts)."""
    session = result.session
    pick = result.pick("weighted") if result.trials else None
    states = Counter(t.state.name for t in result.study.get_trials(deepcopy=False))
    units = {n: (session.objective_label(n) if session is not None else n) for n in result.objective_names}
    return {
        "study": result.study.study_name,
        "mode": result.mode,
        "objectives": result.objective_names,
        "units": units,
        "storage": redact_url(session.spec.storage) if session is not None else None,
        "trials": dict(sorted(states.items())),
        "stopped_early": len(result.stopped_early),
        "baseline": result.baseline,
        "confirmed": result.confirmed,
        "cpus": None if result.cpus is None else result.cpus.to_dict(),
        "pick": None if pick is None else {
            **_trial_payload(pick.trial), "rule": pick.rule, "feasible": pick.feasible,
            "reason": pick.reason, "note": pick.note, "score": pick.score},
        "pareto": [_trial_payload(t) for t in result.pareto],
    }
