"""Figures 3 and 4: how much of the best achievable front a search finds, and what it measures.

The space is ``studies/benchmarks/digits_quality.yaml`` (the digits study over its int8 configs +
fp32, small enough to measure exhaustively).

1. **Exhaustive table** (once, cached): quantuna runs the spec with ``sampler: grid`` (Optuna's
   BruteForceSampler) until every config is measured. The study is kept in
   ``studies/benchmarks/cache/digits_quality.db`` (git-ignored) under a name that carries the
   spec's sha256, so editing the spec measures again, as does another CPU (int8 kernels, hence
   accuracy too, can differ by ISA); ``--refresh`` forces it.
2. **Latencies re-timed together** (:mod:`_retimed`; once per CPU, cached on that study): each
   trial of the sweep timed its model against fp32 in its own moment, and those figures differ
   from one moment (and one onnxruntime session) to the next by more than their own interval
   says. So every distinct
   model of the table, and a second session of the fp32 model itself, is timed again as the
   product's confirm phase times its front (:func:`quantuna.ort.measure.retime`: fp32 reference
   and models interleaved in one process, ``rounds`` rounds of ``iterations // rounds`` runs),
   in ``--passes`` passes (6), each with fresh sessions and the models in a new order. A config's
   latency is the median of its passes' ratios to fp32; its interval the range of those ratios,
   a distribution-free interval for the median (confidence 1 - 2 / 2^passes: 96.9 % with 6).
   Accuracy and size are exact and come from the sweep.
3. **Searches**: ``quantuna.tune`` runs 40 trials with TPE (``sampler: auto``) and with random
   search, for seeds 0-4 (median and min-max spread reported). Everything quantuna does in a
   trial runs for real (the warm start, the sampler, the space, reuse of already measured
   configs, constraints, attrs) except the measurement itself, which is looked up in the table
   by config key (latency: the re-timed median), so the searches see the table's values and
   measurement noise cannot make a search look better or worse than it is. (The lookup replaces
   ``quantuna.study.baseline.measure_model`` and ``quantuna.study.trial.quantize_and_measure``
   inside this process; the confirm phase is off, it cannot change a trial's table values.)
4. **Hypervolume** of the feasible trials among the first 10, 20 and 40 trials, divided by that
   of every feasible config of the table, objectives as minimisation (accuracy negated), in the
   **fp32 box**: each objective scaled so that 0 is the best feasible value and 1 is fp32's (the
   accuracy target for accuracy, fp32's latency (ratio 1) and size); reference point (1, 1, 1):
   the volume of improvement over fp32. Points are clipped to the box (a config slower or larger
   than fp32 lies on its face and adds nothing), so the figure holds on any CPU. Three figures:

   - **tolerance** (the headline): the front as quantuna reports it. Dominance with tolerance
     (issue 14, :mod:`quantuna.front`): two configs whose re-timed latencies lie within each
     other's interval are equal on latency, so each config is credited with the lowest latency
     among the configs it ties with (:func:`_hypervolume.credited_latency`).
   - **strict**: the re-timed medians compared exactly (a microsecond counts).
   - **one timing**: the sweep's own per-trial ratios compared exactly (the figure before the
     re-timing; it rewards the configs one timing happened to favour).

   Infeasible trials (accuracy below the target) count as trials but add no volume.
5. **Distinct configs**: per search, the trials, the distinct configs among them, and the
   evaluations quantuna actually measured (fp32 reuses the baseline; a config already measured
   reuses its trial): the target is measured evaluations == distinct int8 configs.

    python studies/benchmarks/search_quality.py [--trials 40] [--seeds 0 1 2 3 4] [--passes 6]
                                                [--refresh] [--retime]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _hypervolume import Normaliser, credited_latency  # noqa: E402
from _retimed import retimed  # noqa: E402

CHECKPOINTS = (10, 20, 40)
SAMPLERS = {"tpe": "auto", "random": "random"}
FIGURES = ("tolerance", "strict", "one timing")


# --- the exhaustive study ---------------------------------------------------------------------


def _spec(sampler: str, seed: int, storage: Path, workdir: Path, name: str) -> Any:
    from quantuna.spec import load_spec

    spec = load_spec(C.QUALITY_SPEC, storage=f"sqlite:///{storage}")
    study = spec.study.model_copy(update={"sampler": sampler, "seed": seed})
    return replace(spec, study=study, workdir=workdir, name=name)


def exhaustive(refresh: bool) -> tuple[Any, Any]:
    """The exhaustive study of the quality spec (run now if not cached) and its session."""
    import optuna

    import quantuna
    from quantuna.study.run import load_results
    from quantuna.study.session import prepare

    digest = hashlib.sha256(C.QUALITY_SPEC.read_bytes()).hexdigest()[:12]
    C.CACHE.mkdir(parents=True, exist_ok=True)
    db = C.CACHE / "digits_quality.db"
    name = f"digits-quality-exhaustive-{digest}"
    spec = _spec("grid", 0, db, C.CACHE / "digits_quality.quantuna", name)
    session = prepare(spec)
    want = len(session.space.distinct_configs())
    storage = f"sqlite:///{db}"
    cpu = C.cpu_facts()
    try:
        stored = optuna.load_study(study_name=name, storage=storage).user_attrs
    except KeyError:
        stored = None
    if stored is not None and (refresh or stored.get("exhaustive_cpu", cpu) != cpu):
        optuna.delete_study(study_name=name, storage=storage)  # int8 accuracy, too, may vary by CPU
        stored = None
    if not (stored or {}).get("exhaustive_complete"):
        C.say(f"measuring the exhaustive front: {want} configs (cached in {db.relative_to(C.STUDIES.parent)})")
        quantuna.tune(spec, n_trials=10 * want)
        result = load_results(spec)
        keys = {t.config.key() for t in result.trials}
        if len(keys) != want:
            raise RuntimeError(f"the exhaustive study measured {len(keys)} configs, the space has {want}")
        result.study.set_user_attr("exhaustive_cpu", cpu)
        result.study.set_user_attr("exhaustive_complete", True)
    return load_results(spec), session


@dataclass(frozen=True)
class Table:
    """The exhaustive table, per config key: minimisation vectors per figure and feasibility."""

    keys: list[str]
    vectors: dict[str, np.ndarray]  # figure -> rows (-accuracy, latency ratio, size), per key
    feasible: np.ndarray
    worst: np.ndarray  # fp32's corner: (-accuracy target, 1, fp32 size)

    @classmethod
    def build(cls, full: Any, timed: dict[str, Any]) -> Table:
        configs = timed["configs"]
        first: dict[str, Any] = {}
        for t in full.trials:
            first.setdefault(t.config.key(), t)
        keys = [k for k in first if k in configs]
        rows = [first[k] for k in keys]
        ratio = [configs[k]["ratio"] for k in keys]
        credit = credited_latency(ratio, [(configs[k]["low"], configs[k]["high"]) for k in keys])
        own = [1.0 if t.config.is_fp32 or t.ratio is None else float(t.ratio) for t in rows]
        acc = [-t.values["accuracy"] for t in rows]
        size = [t.values["modelsize"] for t in rows]
        vectors = {name: np.array([acc, lat, size], dtype=float).T
                   for name, lat in zip(FIGURES, (credit, ratio, own))}
        base = full.baseline
        worst = np.array([-base["accuracy_target"], 1.0, base["values"]["modelsize"]])
        return cls(keys, vectors, np.array([t.feasible for t in rows]), worst)

    def boxes(self) -> dict[str, Normaliser]:
        return {name: Normaliser(v[self.feasible].min(axis=0), self.worst, 1.0)
                for name, v in self.vectors.items()}

    def points(self, figure: str, keys: list[str]) -> np.ndarray:
        index = {k: i for i, k in enumerate(self.keys)}
        rows = [index[k] for k in keys if k in index and self.feasible[index[k]]]
        return self.vectors[figure][rows]


# --- searches replayed on the exhaustive table --------------------------------------------------


class Lookup:
    """Stands in for quantuna's measurement: the table's values by config key (latency: the
    re-timed median ratio times the baseline's fp32 ms)."""

    def __init__(self, full: Any, timed: dict[str, Any]) -> None:
        from quantuna.ort.measure import Measurement

        fp32_ms = full.baseline["values"]["performance"]
        self.values = {}
        for t in full.trials:
            values = dict(t.values)
            values["performance"] = timed["configs"][t.config.key()]["ratio"] * fp32_ms
            self.values[t.config.key()] = values
        self.baseline = Measurement(values=dict(full.baseline["values"]))
        self.measured = 0

    def measure_model(self, session: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        return self.baseline  # only the fp32 baseline reaches it: trials go through measure_config

    def measure_config(self, study: Any, trial: Any, session: Any, config: Any, *args: Any,
                       **kwargs: Any) -> tuple[dict[str, float], None, None, None]:
        from quantuna.errors import TrialError

        self.measured += 1
        if config.key() not in self.values:
            raise TrialError(f"{config.summary()} failed in the exhaustive run")
        return dict(self.values[config.key()]), None, None, None  # (values, reused from, latency, stopped)


def search(lookup: Lookup, sampler: str, seed: int, trials: int, tmp: Path) -> tuple[list[Any], int]:
    """One search of ``trials`` trials, measured by ``lookup``; returns its trials in order and
    the count of evaluations quantuna asked for."""
    import quantuna
    import quantuna.study.baseline as qb
    import quantuna.study.trial as qt

    spec = _spec(sampler, seed, tmp / f"{sampler}-{seed}.db", tmp / f"{sampler}-{seed}", f"{sampler}-{seed}")
    spec = replace(spec, measure=spec.measure.model_copy(update={"confirm": False}))
    saved = qb.measure_model, qt.quantize_and_measure
    qb.measure_model, qt.quantize_and_measure = lookup.measure_model, lookup.measure_config
    before = lookup.measured
    try:
        result = quantuna.tune(spec, n_trials=trials)
    finally:
        qb.measure_model, qt.quantize_and_measure = saved
    done = sorted(result.study.get_trials(deepcopy=False), key=lambda t: t.number)
    return done, lookup.measured - before


# --- figures --------------------------------------------------------------------------------------


def _cross_check(table: Table, boxes: dict[str, Normaliser], best: dict[str, float]) -> None:
    """The slicing hypervolume against Optuna's (a private module) on the whole table."""
    try:
        from optuna._hypervolume import compute_hypervolume
    except ImportError:  # pragma: no cover
        return
    for name, norm in boxes.items():
        theirs = compute_hypervolume(norm.scaled(table.points(name, table.keys)), norm.ref)
        assert abs(theirs - best[name]) < 1e-9 * max(1.0, best[name]), (name, theirs, best[name])


def _difficulty(table: Table, boxes: dict[str, Normaliser], best: dict[str, float]) -> dict[str, int]:
    """Per figure, how many configs alone hold >= 95 % of the table's volume."""
    return {name: sum(norm.hv(table.points(name, [k])) >= 0.95 * best[name] for k in table.keys)
            for name, norm in boxes.items()}


def _retime_facts(full: Any, table: Table, timed: dict[str, Any]) -> str:
    """One sentence: how far the sweep's own timings are from the re-timed ones."""
    configs = timed["configs"]
    own, outside = [], 0
    for t in full.trials:
        if t.config.is_fp32 or t.ratio is None or t.config.key() not in configs:
            continue
        c = configs[t.config.key()]
        own.append(abs(t.ratio / c["ratio"] - 1))
        outside += not c["low"] <= t.ratio <= c["high"]
    tol = table.vectors["tolerance"][:, 1]
    fastest = int(np.sum(tol == tol.min()))
    s = timed["fp32_self"]
    return (
        f"Re-timed {timed['when']}: {timed['models']} distinct models (fp32's second session "
        f"included), {timed['passes']} passes x {timed['rounds']} rounds x {timed['runs']} runs. "
        f"fp32 against itself: {s['ratio']:.3f} [{s['low']:.3f}-{s['high']:.3f}]. The sweep's "
        f"own per-trial ratios differ from the re-timed medians by {100 * C.median(own):.1f} % "
        f"(median; max {100 * max(own):.1f} %), and {outside} of {len(own)} int8 trials lie outside the "
        f"re-timed interval. Fastest re-timed config: ratio {table.vectors['strict'][:, 1].min():.3f}; "
        f"{fastest} configs tie with it (credited with its latency in the tolerance figure)."
    )


def _score(table: Table, boxes: dict[str, Normaliser], best: dict[str, float],
           done: list[Any], checkpoints: list[int]) -> dict[str, list[float]]:
    """Per figure, the hypervolume ratio of the feasible trials among the first k trials."""
    import optuna

    out: dict[str, list[float]] = {name: [] for name in boxes}
    for k in checkpoints:
        keys = [t.user_attrs["config_key"] for t in done[:k]
                if t.state == optuna.trial.TrialState.COMPLETE and "config_key" in t.user_attrs]
        for name, norm in boxes.items():
            out[name].append(norm.hv(table.points(name, keys)) / best[name])
    return out


def _cell(values: list[float]) -> str:
    return " / ".join(f"{100 * v:.1f}" for v in values)


def _spread_cell(samples: list[list[float]]) -> str:
    return " / ".join(f"**{100 * C.median(s):.1f}** [{100 * min(s):.1f}-{100 * max(s):.1f}]" for s in samples)


def _run_searches(args: Any, table: Table, lookup: Lookup, checkpoints: list[int]) -> tuple[
        list[list[Any]], list[list[Any]], dict[tuple[str, str], list[list[float]]]]:
    """Every sampler and seed: per-seed rows, distinct-config rows, and per (sampler, figure)
    the ratios at each checkpoint over the seeds."""
    boxes = table.boxes()
    best = {name: norm.hv(table.points(name, table.keys)) for name, norm in boxes.items()}
    rows, count_rows = [], []
    summary: dict[tuple[str, str], list[list[float]]] = {}
    with C.scratch("search-quality-") as tmp:
        for label, sampler in SAMPLERS.items():
            for seed in args.seeds:
                done, measured = search(lookup, sampler, seed, args.trials, tmp)
                ratios = _score(table, boxes, best, done, checkpoints)
                for name, values in ratios.items():
                    per_k = summary.setdefault((label, name), [[] for _ in checkpoints])
                    for i, v in enumerate(values):
                        per_k[i].append(v)
                keys = [t.user_attrs.get("config_key") for t in done]
                fp32 = sum(1 for t in done if t.user_attrs.get("config") == {"approach": "fp32"})
                distinct = len(set(keys)) - (1 if fp32 else 0)
                C.say(f"search quality {label} seed {seed} (% after {', '.join(map(str, checkpoints))}): "
                      + "; ".join(f"{name} {_cell(v)}" for name, v in ratios.items())
                      + f"; {measured} measured / {len(done)} trials, {distinct} distinct int8 configs")
                rows.append([label, seed] + [_cell(ratios[name]) for name in FIGURES])
                count_rows.append([label, seed, len(done), distinct + (1 if fp32 else 0), measured,
                                   f"{measured / len(done):.2f}", "yes" if measured == distinct else "**no**"])
    for label in SAMPLERS:
        C.say(f"search quality {label}, median [min-max] of {len(args.seeds)} seeds: " + "; ".join(
            f"{name} {_spread_cell(summary[(label, name)])}" for name in FIGURES).replace("**", ""))
        rows.append([f"**{label}** median [min-max]", "-"]
                    + [_spread_cell(summary[(label, name)]) for name in FIGURES])
    return rows, count_rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--passes", type=int, default=6, help="re-timing passes over the table")
    parser.add_argument("--refresh", action="store_true", help="measure the exhaustive table again")
    parser.add_argument("--retime", action="store_true", help="re-time the table's latencies again")
    args = parser.parse_args()
    C.quiet()
    full, session = exhaustive(args.refresh)
    timed = retimed(full, session, args.passes, args.retime or args.refresh)
    table = Table.build(full, timed)
    boxes = table.boxes()
    best = {name: norm.hv(table.points(name, table.keys)) for name, norm in boxes.items()}
    _cross_check(table, boxes, best)
    hard = _difficulty(table, boxes, best)
    facts = _retime_facts(full, table, timed)
    C.say(facts)
    C.say(f"exhaustive: {len(full.trials)} trials, {int(table.feasible.sum())} feasible configs; "
          + ", ".join(f"{name}: {n} configs alone hold >= 95 %" for name, n in hard.items()))
    checkpoints = [k for k in CHECKPOINTS if k <= args.trials]
    rows, count_rows, summary = _run_searches(args, table, Lookup(full, timed), checkpoints)
    verdict = _verdict(summary, checkpoints, len(args.seeds))
    C.say(verdict)
    _write_results(full, session, table, f"{facts} {verdict}", hard, checkpoints, rows, count_rows)


def _verdict(summary: dict[tuple[str, str], list[list[float]]], checkpoints: list[int], seeds: int) -> str:
    """Whether ``auto`` reaches 95 % of the tolerance figure within 20 trials, on every seed."""
    if 20 not in checkpoints:
        return "Target not evaluated (fewer than 20 trials)."
    at20 = summary[("tpe", "tolerance")][checkpoints.index(20)]
    strict = summary[("tpe", "strict")][checkpoints.index(20)]
    reached = "reached" if min(at20) >= 0.95 else ("reached by the median only" if C.median(at20) >= 0.95
                                                  else "**not reached**")
    return (f"Target (>= 95 % within 20 trials, `auto`, tolerance figure): {reached}: "
            f"{100 * C.median(at20):.1f} % median [{100 * min(at20):.1f}-{100 * max(at20):.1f}] over "
            f"{seeds} seeds (strict figure: {100 * C.median(strict):.1f} % "
            f"[{100 * min(strict):.1f}-{100 * max(strict):.1f}]).")


def _write_results(full: Any, session: Any, table: Table, facts: str, hard: dict[str, int],
                   checkpoints: list[int], rows: list[list[Any]], count_rows: list[list[Any]]) -> None:
    n_configs = len(session.space.distinct_configs())
    ks = " / ".join(map(str, checkpoints))
    body3 = (
        f"Space: `studies/benchmarks/digits_quality.yaml` ({n_configs} configs). Exhaustive run "
        f"(BruteForceSampler): {len(full.trials)} trials, {int(table.feasible.sum())} feasible configs. "
        "Each search is a real `quantuna.tune` whose measurements are looked up in the table (see "
        "the script's docstring); a figure is the hypervolume of the search's feasible trials among "
        "the first k trials / that of every feasible config, in the **fp32 box** (each objective "
        "scaled from the best feasible value (0) to fp32's (1: the accuracy target, fp32's latency, "
        "its size), reference point (1, 1, 1), points clipped to the box: the volume of improvement "
        "over fp32, defined on any CPU). The table's latencies are **re-timed together**: every "
        "distinct model and fp32 interleaved in one process, as the confirm phase times a front, in "
        "several passes with fresh sessions; a config's latency is the median of its passes' ratios "
        "to fp32, its interval their range (a distribution-free interval for the median, 96.9 % "
        "with 6 passes). **tolerance** (the headline): the front as quantuna reports it "
        "(issue 14's dominance with tolerance: configs whose latencies lie within each other's "
        "interval are equal on latency, each credited with the lowest latency it ties with). "
        "**strict**: the re-timed medians compared exactly. **one timing**: the sweep's own "
        "per-trial ratios compared exactly (the figure before this re-timing). "
        f"Configs that alone hold >= 95 % of the volume: {hard['tolerance']} (tolerance), "
        f"{hard['strict']} (strict), {hard['one timing']} (one timing) of {len(table.keys)}.\n\n"
        f"{facts}\n\nCells: % of the table's hypervolume after {ks} trials.\n\n"
        + C.table(["sampler", "seed"] + [f"{name} ({ks})" for name in FIGURES], rows)
    )
    C.update_results("search_quality", "3. Search quality (hypervolume vs the exhaustive front)", body3)
    ex_measured = sum(1 for t in full.trials if t.reused_from is None and not t.config.is_fp32)
    ex_distinct = len({t.config.key() for t in full.trials if not t.config.is_fp32})
    body4 = (
        "Per search of figure 3: trials, distinct configs sampled (fp32 included), evaluations "
        "quantuna measured (fp32 reuses the baseline, a repeated config reuses its first trial). "
        "Target: measured evaluations == distinct int8 configs. The exhaustive run, with real "
        f"measurements: {ex_measured} measured / {len(full.trials)} trials, {ex_distinct} "
        "distinct int8 configs.\n\n"
        + C.table(["sampler", "seed", "trials", "distinct configs", "measured", "measured / trials",
                   "measured == distinct int8"], count_rows)
    )
    C.update_results("distinct_configs", "4. Distinct configs (measured evaluations / trials)", body4)


if __name__ == "__main__":
    main()
