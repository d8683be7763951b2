"""Figures 3 and 4: how much of the best achievable front a search finds, and what it measures.

The space is ``studies/benchmarks/digits_quality.yaml`` (the digits study over 168 int8 configs +
fp32).

1. **Exhaustive front** (once, cached): quantuna runs the spec with ``sampler: grid`` (Optuna's
   BruteForceSampler) until every config is measured. The study is kept in
   ``studies/benchmarks/cache/digits_quality.db`` (git-ignored) under a name that carries the
   spec's sha256, so editing the spec measures again; ``--refresh`` forces it.
2. **Searches**: ``quantuna.tune`` runs 40 trials with TPE (``sampler: auto``) and with random
   search, for seeds 0-4 (median and min-max spread reported). Everything quantuna does in a trial runs for real (the warm start,
   the sampler, the space, reuse of already measured configs, constraints, attrs) except the
   measurement itself, which is looked up in the exhaustive table by config key: so the searches
   see exactly the values the exhaustive front was built from, and measurement noise cannot make
   a search look better or worse than it is. (The lookup replaces ``quantuna.study.baseline.measure_model``
   and ``quantuna.study.trial.quantize_and_measure`` inside this process.)
3. **Hypervolume** of the feasible trials among the first 10, 20 and 40 trials, divided by the
   hypervolume of the exhaustive feasible front, with objectives turned into minimisation
   (accuracy negated) and measured in two boxes:

   - **fp32 box** (the headline figure): each objective scaled so that 0 is the best value of
     the exhaustive feasible front and 1 is what fp32 gives (the accuracy target for accuracy,
     the fp32 latency and size); reference point (1, 1, 1). A config counts by how much it
     improves on fp32 within the budget; one slower or larger than fp32 adds nothing.
   - **front box**: each objective scaled over the exhaustive feasible front itself (0 = its
     best, 1 = its worst value), reference point its nadir + 10 % = (1.1, 1.1, 1.1). On this
     space that front spans 0.978-0.98 accuracy (one evaluation image) and 5 % of latency, so
     the figure mostly says whether a search hit the configs that timing noise favoured in the
     exhaustive run; it is printed for comparison with the literature's usual choice.

   Infeasible trials (accuracy below the target) count as trials but add no volume. Points are
   clipped to the box before the volume is taken (the reference point is fixed by fp32 or the
   front, not by the data): on a CPU where some front config is slower or larger than fp32 it
   lies on the box's face and adds nothing, so the figure holds on any CPU (Optuna's
   ``compute_hypervolume``, the cross-check, refuses points outside the box).
4. **Distinct configs**: per search, the trials, the distinct configs among them, and the
   evaluations quantuna actually measured (fp32 reuses the baseline; a config already measured
   reuses its trial): the target is measured evaluations == distinct int8 configs.

    python studies/benchmarks/search_quality.py [--trials 40] [--seeds 0 1 2 3 4] [--refresh]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CHECKPOINTS = (10, 20, 40)
SAMPLERS = {"tpe": "auto", "random": "random"}


# --- hypervolume ------------------------------------------------------------------------------


def _hv2(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume (minimisation) of ``points`` below ``ref``."""
    pts = points[np.all(points < ref, axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    volume, best_y = 0.0, ref[1]
    for x, y in pts:
        if y < best_y:
            next_x = ref[0]
            volume += (next_x - x) * (best_y - y)
            best_y = y
    return float(volume)


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume (minimisation) of 2-D or 3-D ``points`` below ``ref``, by slicing."""
    points = np.asarray(points, dtype=float).reshape(-1, len(ref))
    points = points[np.all(points < ref, axis=1)]
    if not len(points):
        return 0.0
    if len(ref) == 2:
        return _hv2(points, ref)
    if len(ref) != 3:
        raise ValueError("hypervolume: 2 or 3 objectives")
    zs = np.unique(points[:, 2])
    volume = 0.0
    for i, z in enumerate(zs):
        top = zs[i + 1] if i + 1 < len(zs) else ref[2]
        volume += _hv2(points[points[:, 2] <= z][:, :2], ref[:2]) * (top - z)
    return float(volume)


class Normaliser:
    """Minimisation vectors scaled so that ``ideal`` maps to 0 and ``worst`` to 1, per objective;
    the hypervolume is taken below ``ref`` (in scaled units)."""

    def __init__(self, ideal: np.ndarray, worst: np.ndarray, ref: float) -> None:
        self.low = np.asarray(ideal, dtype=float)
        span = np.asarray(worst, dtype=float) - self.low
        self.span = np.where(span > 0, span, 1.0)
        self.ref = np.full(len(self.low), ref)

    def scaled(self, points: np.ndarray) -> np.ndarray:
        """Points in box units, clipped to the box: a point worse than the reference on some
        objective (e.g. an int8 config slower than fp32 on a CPU without fast int8) lies on the
        box's face and adds no volume, as it adds nothing over fp32."""
        return np.minimum((np.asarray(points, dtype=float) - self.low) / self.span, self.ref)

    def hv(self, points: np.ndarray) -> float:
        if not len(points):
            return 0.0
        return hypervolume(self.scaled(points), self.ref)


def _minimise(values: dict[str, float], names: list[str], higher: list[bool]) -> list[float]:
    return [-values[n] if h else values[n] for n, h in zip(names, higher)]


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
    if refresh:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass
    try:
        done = optuna.load_study(study_name=name, storage=storage).user_attrs.get("exhaustive_complete")
    except KeyError:
        done = False
    if not done:
        C.say(f"measuring the exhaustive front: {want} configs (cached in {db.relative_to(C.STUDIES.parent)})")
        quantuna.tune(spec, n_trials=10 * want)
        result = load_results(spec)
        keys = {t.config.key() for t in result.trials}
        if len(keys) != want:
            raise RuntimeError(f"the exhaustive study measured {len(keys)} configs, the space has {want}")
        result.study.set_user_attr("exhaustive_complete", True)
    return load_results(spec), session


# --- searches replayed on the exhaustive table --------------------------------------------------


class Lookup:
    """Stands in for quantuna's measurement: the exhaustive study's values by config key."""

    def __init__(self, exhaustive_result: Any) -> None:
        from quantuna.ort.measure import Measurement

        self.values = {t.config.key(): dict(t.values) for t in exhaustive_result.trials}
        self.baseline = Measurement(values=dict(exhaustive_result.baseline["values"]))
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


def search(lookup: Lookup, sampler: str, seed: int, trials: int, tmp: Path) -> tuple[Any, int]:
    """One search of ``trials`` trials, measured by ``lookup``; returns the result and the count
    of evaluations quantuna asked for."""
    import quantuna
    import quantuna.study.baseline as qb
    import quantuna.study.trial as qt

    spec = _spec(sampler, seed, tmp / f"{sampler}-{seed}.db", tmp / f"{sampler}-{seed}", f"{sampler}-{seed}")
    saved = qb.measure_model, qt.quantize_and_measure
    qb.measure_model, qt.quantize_and_measure = lookup.measure_model, lookup.measure_config
    before = lookup.measured
    try:
        result = quantuna.tune(spec, n_trials=trials)
    finally:
        qb.measure_model, qt.quantize_and_measure = saved
    return result, lookup.measured - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--refresh", action="store_true", help="measure the exhaustive front again")
    args = parser.parse_args()
    C.quiet()
    import optuna

    full, session = exhaustive(args.refresh)
    names, higher = full.objective_names, full.higher_is_better
    front = np.array([_minimise(t.values, names, higher) for t in full.pareto])
    base = dict(full.baseline["values"], accuracy=full.baseline["accuracy_target"])
    boxes = {
        "fp32": Normaliser(front.min(axis=0), np.array(_minimise(base, names, higher)), 1.0),
        "front": Normaliser(front.min(axis=0), front.max(axis=0), 1.1),
    }
    best = {box: norm.hv(front) for box, norm in boxes.items()}
    try:  # cross-check the slicing hypervolume with Optuna's (a private module)
        from optuna._hypervolume import compute_hypervolume

        for box, norm in boxes.items():
            theirs = compute_hypervolume(norm.scaled(front), norm.ref)
            assert abs(theirs - best[box]) < 1e-9 * max(1.0, best[box]), (box, theirs, best[box])
    except ImportError:  # pragma: no cover
        pass
    feasible = sum(t.feasible for t in full.trials)
    ex_measured = sum(1 for t in full.trials if t.reused_from is None and not t.config.is_fp32)
    ex_distinct = len({t.config.key() for t in full.trials if not t.config.is_fp32})
    C.say(f"exhaustive: {len(full.trials)} trials, {feasible} feasible, feasible Pareto front of "
          f"{len(full.pareto)}; fp32 box {best['fp32']:.3f}, front box {best['front']:.3f}")
    checkpoints = [k for k in CHECKPOINTS if k <= args.trials]
    lookup = Lookup(full)
    rows, count_rows = [], []
    summary: dict[tuple[str, str], dict[int, list[float]]] = {}
    with C.scratch("search-quality-") as tmp:
        for label, sampler in SAMPLERS.items():
            for seed in args.seeds:
                result, measured = search(lookup, sampler, seed, args.trials, tmp)
                done = sorted(result.study.get_trials(deepcopy=False), key=lambda t: t.number)
                ratios: dict[str, list[float]] = {box: [] for box in boxes}
                for k in checkpoints:
                    first = [t for t in done[:k] if t.state == optuna.trial.TrialState.COMPLETE
                             and t.user_attrs.get("feasible")]
                    points = np.array([_minimise(t.user_attrs["values"], names, higher) for t in first])
                    for box, norm in boxes.items():
                        ratios[box].append(norm.hv(points) / best[box])
                        summary.setdefault((label, box), {}).setdefault(k, []).append(ratios[box][-1])
                keys = [t.user_attrs.get("config_key") for t in done]
                fp32 = sum(1 for t in done if t.user_attrs.get("config") == {"approach": "fp32"})
                distinct = len(set(keys)) - (1 if fp32 else 0)
                C.say(f"search quality {label} seed {seed}: "
                      + ", ".join(f"{100 * r:.1f} % after {k}" for k, r in zip(checkpoints, ratios["fp32"]))
                      + " of the exhaustive hypervolume (fp32 box; front box "
                      + ", ".join(f"{100 * r:.1f} %" for r in ratios["front"])
                      + f"); {measured} measured / {len(done)} trials, {distinct} distinct int8 configs")
                rows.append([label, seed] + [f"{100 * r:.1f} %" for r in ratios["fp32"]]
                            + [f"{100 * r:.1f} %" for r in ratios["front"]])
                count_rows.append([label, seed, len(done), distinct + (1 if fp32 else 0), measured,
                                   f"{measured / len(done):.2f}", "yes" if measured == distinct else "**no**"])
    for label in SAMPLERS:
        medians = {box: [C.median(summary[(label, box)][k]) for k in checkpoints] for box in boxes}
        spread = {box: [(min(summary[(label, box)][k]), max(summary[(label, box)][k]))
                        for k in checkpoints] for box in boxes}
        C.say(f"search quality {label} (median [min-max] of {len(args.seeds)} seeds): "
              + ", ".join(f"{100 * m:.1f} % [{100 * lo:.1f}-{100 * hi:.1f}] after {k}"
                          for k, m, (lo, hi) in zip(checkpoints, medians["fp32"], spread["fp32"]))
              + " (fp32 box); " + ", ".join(f"{100 * m:.1f} %" for m in medians["front"])
              + " (front box)")
        rows.append([f"**{label} median** [min-max]", "-"]
                    + [f"**{100 * m:.1f} %** [{100 * lo:.1f}-{100 * hi:.1f}]" for box in boxes
                       for m, (lo, hi) in zip(medians[box], spread[box])])
    spans = []
    for i, n in enumerate(names):
        lo, hi = np.abs(front[:, i]).min(), np.abs(front[:, i]).max()
        spans.append(f"{lo:.4g}-{hi:.4g} {n}")
    front_span = ", ".join(spans)
    total_measured = sum(r[4] for r in count_rows)
    total_trials = sum(r[2] for r in count_rows)
    C.say(f"distinct configs: {total_measured} measured evaluations / {total_trials} trials = "
          f"{total_measured / total_trials:.2f}; measured == distinct int8 configs in "
          f"{sum(r[6] == 'yes' for r in count_rows)} of {len(count_rows)} searches; exhaustive run: "
          f"{ex_measured} measured / {len(full.trials)} trials, {ex_distinct} distinct int8 configs")
    body3 = (
        f"Space: `studies/benchmarks/digits_quality.yaml` ({len(session.space.distinct_configs())} "
        f"configs). Exhaustive run (BruteForceSampler): {len(full.trials)} trials, {feasible} "
        f"feasible, feasible Pareto front of {len(full.pareto)} trials. Each search is a real "
        "`quantuna.tune` whose measurements are looked up in the exhaustive table (see the "
        "script's docstring); the figure is the hypervolume of its feasible trials among the first "
        "k trials / the exhaustive feasible front's. **fp32 box**: each objective scaled from the "
        "front's best value (0) to fp32's (1: the accuracy target, the fp32 latency and size), "
        "reference point (1, 1, 1): the volume of improvement over fp32. **front box**: scaled "
        "over the exhaustive front itself, reference point at its nadir + 10 %; that front spans "
        f"{front_span}, so this figure mostly rewards hitting the configs timing noise favoured. "
        "Target: >= 95 % of the exhaustive hypervolume within 20 trials (`auto`).\n\n"
        + C.table(["sampler", "seed"] + [f"fp32 box, {k} trials" for k in checkpoints]
                  + [f"front box, {k} trials" for k in checkpoints], rows)
    )
    C.update_results("search_quality", "3. Search quality (hypervolume vs the exhaustive front)", body3)
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
