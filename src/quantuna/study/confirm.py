"""Confirm before you report: the front's candidates and fp32 re-timed together at the end of a run.

Each trial's latency was timed against fp32 in its own moment; the front compares trials timed
minutes apart. The confirm phase rebuilds the models of the feasible front and of the layer just behind it (up
to ``measure.confirm.candidates``, the weighted pick first), then times them and the fp32 reference
in one process, in ``measure.confirm.rounds`` interleaved rounds (:func:`quantuna.ort.measure.retime`).

Optuna's values of a finished trial cannot change, and neither can its user attrs, so the
figures go to the study's ``confirmed`` user attr: ``{"fp32": {...}, "trials": {"<number>":
{ms, fp32_ms, ratio, low, high, rounds, runs, rebuilt_identical, measured_on}}, "rounds", "runs",
host facts, threads}``. The phase runs on this host: its candidates are the front of this host's
CPU when it timed trials (else of the reference CPU, see :mod:`quantuna.study.cpus`), and each
figure keeps the CPU that timed it (``measured_on``), so figures of several hosts never mix.
:func:`quantuna.results.collect_results` reads them back into every confirmed ``TrialResult``,
so the CLI, the note, the report, the export and the pick all use the confirmed figures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna

from quantuna._util import sha256_file
from quantuna.ort.measure import retime
from quantuna.ort.quantize import quantize
from quantuna.phases import phase
from quantuna.results import LATENCY, TrialResult, TuneResult, collect_results, pareto_front
from quantuna.study import attrs
from quantuna.study.cpus import MEASURED_ON, cpu_of, facts_of
from quantuna.study.session import Session

logger = logging.getLogger(__name__)


def candidates(result: TuneResult, limit: int) -> list[TrialResult]:
    """The trials to confirm, at most ``limit``: the weighted pick, the front, then the next layer.

    A trial's own figures can be off by more than their interval says (two sessions of one model
    differ; the machine changed between rounds), so a trial just behind the front is confirmed
    too: the second non-dominated layer of the feasible trials follows the front, each layer
    fastest first. Only trials timed on the result's reference CPU compete (``result.comparable``).
    """
    if not result.pareto:
        return []
    first = result.pick("weighted").trial
    front = {t.number for t in result.pareto}
    rest = [t for t in result.comparable if t.feasible and t.number not in front]
    second = pareto_front(rest, result.objective_names, result.higher_is_better)

    def fastest(layer: list[TrialResult]) -> list[TrialResult]:  # fp32 is the reference itself
        return sorted((t for t in layer if t.number != first.number and not t.config.is_fp32),
                      key=lambda t: (t.ratio if t.ratio is not None else float("inf"), t.number))

    chosen = [first] if first.number in front and not first.config.is_fp32 else []
    return (chosen + fastest(result.pareto) + fastest(second))[:limit]


def _rebuild(session: Session, trial: TrialResult, directory: Path) -> Path:
    """The trial's model file again (same code path: the same bytes)."""
    ranges = session.ranges.get(trial.config).path if trial.config.approach == "static" else None
    return quantize(session.model, trial.config, directory / f"confirm-{trial.number}.onnx", ranges=ranges)


def confirm_front(study: optuna.Study, session: Session, result: TuneResult,
                  passes: int = 2) -> TuneResult:
    """Re-time the front and fp32 together until every candidate has confirmed figures.

    Confirmed figures can change the front (a trial that looked fast may not be); a second pass
    times the trials the new figures brought in, with fp32 (the first pass's trials are not timed
    again, nor their models rebuilt). Figures of earlier passes stay (each is a ratio to fp32
    timed in its own pass). Returns the study's results read again. Off with
    ``measure.confirm: false``, without a performance objective, or without a feasible front.
    """
    settings = session.spec.measure.confirm_settings
    if settings is None or LATENCY not in result.objective_names or session.timing is None:
        return result
    here = cpu_of(_facts(session))
    if here is not None and result.cpus is not None and here in result.cpus.trials \
            and here != result.cpus.reference:
        result = collect_results(study, session, cpu=here.id)  # the front of this host's CPU
    built = _Rebuilt(session)
    timed: set[str] = set()  # the trials a pass of this call timed
    try:
        for _ in range(passes):
            chosen = candidates(result, settings.candidates)
            stored = dict(study.user_attrs.get(attrs.CONFIRMED) or {})
            done = _tagged(stored)
            if not chosen or all(str(t.number) in done for t in chosen):
                break
            todo = [t for t in chosen if str(t.number) not in timed]
            start = time.perf_counter()
            try:
                with phase(f"confirming {len(todo)} trials: re-timing them with fp32"):
                    record = _measure(session, todo, settings.rounds, built)
            except Exception as exc:  # noqa: BLE001  (the study's results stand without it)
                logger.warning("the confirm phase failed (%s: %s); reporting the trials' own figures",
                               type(exc).__name__, exc)
                break
            record["seconds"] = time.perf_counter() - start - record["lock_wait"]
            timed.update(record["trials"])
            record["trials"] = {**done, **record["trials"]}
            study.set_user_attr(attrs.CONFIRMED, record)
            logger.info("confirmed trials %s against fp32 in %.1f s", sorted(record["trials"]),
                        record["seconds"])
            result = collect_results(study, session)
    finally:
        built.remove()
    return result


class _Rebuilt:
    """The model files rebuilt by one confirm phase, one per distinct model (kept across its
    passes, removed at its end), and whether each trial's rebuild gave its bytes again."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.directory = session.spec.workdir / "models"
        self.paths: dict[str, Path] = {}
        self.identical: dict[int, bool] = {}

    @staticmethod
    def key(trial: TrialResult) -> str:
        """Trials with the same bytes share one file (and one timing)."""
        return trial.model_sha256 or f"trial-{trial.number}"

    def path(self, trial: TrialResult) -> Path:
        """The trial's model file, rebuilt now unless this phase already has its bytes."""
        key = self.key(trial)
        if key not in self.paths:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.paths[key] = _rebuild(self.session, trial, self.directory)
        if trial.number not in self.identical:
            self.identical[trial.number] = trial.model_sha256 == sha256_file(self.paths[key])
        return self.paths[key]

    def remove(self) -> None:
        """Delete every rebuilt file."""
        for path in self.paths.values():
            path.unlink(missing_ok=True)


def _facts(session: Session) -> dict[str, Any]:
    """This host's facts and the latency threads: what the confirm record's CPU key is made of."""
    return {**attrs.host_facts(), attrs.THREADS: {
        "latency": session.spec.measure.performance.threads,
        "accuracy": session.spec.measure.accuracy_threads}}


def _tagged(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored figures, each tagged with the CPU that timed it (an earlier record kept its
    CPU once, at its top): another host's confirm phase keeps them apart from its own."""
    facts = facts_of(stored)
    return {n: f if f.get(MEASURED_ON) else {**f, MEASURED_ON: facts}
            for n, f in (stored.get("trials") or {}).items()}


def _measure(session: Session, chosen: list[TrialResult], rounds: int,
             built: _Rebuilt) -> dict[str, Any]:
    assert session.timing is not None
    paths = {built.key(t): built.path(t) for t in chosen}
    batch = next(session.evaluation.batches(session.spec.measure.performance.batch_size))[0]
    keys = list(paths)
    stats, waited = retime([paths[k] for k in keys], batch, session.spec.measure, session.timing,
                           rounds)
    by_key = dict(zip(keys, stats))
    facts = _facts(session)
    trials = {}
    for t in chosen:
        figures = by_key[built.key(t)]
        trials[str(t.number)] = {**figures.to_dict(), "rebuilt_identical": built.identical[t.number],
                                 MEASURED_ON: facts_of(facts)}
    first = stats[0]
    return {
        "fp32": {"ms": first.fp32_ms, "rounds": first.rounds, "runs": first.runs},
        "trials": trials,
        "rounds": first.rounds,
        "runs": first.runs,
        "lock_wait": waited,
        **facts,
    }
