"""The exhaustive table's latencies re-timed together, for figure 3 (``search_quality.py``).

Each trial of the exhaustive sweep timed its model against fp32 in its own moment and its own
onnxruntime session; those figures move from one moment (and session) to the next by more than
the trial's own interval says. Here every distinct model of the table and a second session of
the fp32 model are timed as the confirm phase times a front (:func:`quantuna.ort.measure.retime`:
the fp32 reference and the models interleaved in one process), in several passes, each with fresh
sessions and the models in a new order. A config's latency is the median of its passes' ratios
to fp32; its interval is their range, a distribution-free interval for the median (confidence
1 - 2 / 2^passes: 96.9 % with 6 passes).
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

RETIMED = "retimed"  # the exhaustive study's user attr holding the re-timed latencies


def _build_models(full: Any, session: Any, directory: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Every distinct model of the table (and the fp32 model, as ``fp32``); config key -> sha."""
    from quantuna._util import sha256_file
    from quantuna.ort.quantize import quantize

    paths: dict[str, Path] = {"fp32": session.model.path}
    sha_of: dict[str, str] = {}
    for t in full.trials:
        if t.config.is_fp32:
            sha_of[t.config.key()] = "fp32"
            continue
        ranges = session.ranges.get(t.config).path if t.config.approach == "static" else None
        path = quantize(session.model, t.config, directory / f"trial-{t.number}.onnx", ranges=ranges)
        sha = sha256_file(path)
        sha_of[t.config.key()] = sha
        if sha in paths:
            path.unlink()
        else:
            paths[sha] = path
    return paths, sha_of


def _time_passes(paths: dict[str, Path], session: Any, passes: int) -> dict[str, list[float]]:
    """Per model, its ratio to fp32 in each pass (fresh sessions, a new order each pass)."""
    from quantuna.ort.latency import Reference, Timing
    from quantuna.ort.measure import retime

    measure = session.spec.measure
    batch = next(session.evaluation.batches(measure.performance.batch_size))[0]
    order = list(paths)
    ratios: dict[str, list[float]] = {name: [] for name in paths}
    rng = random.Random(0)
    for i in range(passes):
        rng.shuffle(order)
        timing = Timing(Reference(session.model.path, measure.performance.threads), "search_quality")
        stats, _ = retime([paths[n] for n in order], batch, measure, timing, measure.performance.timed_rounds)
        for name, s in zip(order, stats):
            ratios[name].append(s.ratio)
        C.say(f"re-timing pass {i + 1}/{passes}: {len(order)} models with fp32 ({stats[0].fp32_ms * 1e3:.1f} us)")
    return ratios


def retimed(full: Any, session: Any, passes: int, again: bool) -> dict[str, Any]:
    """The table's latencies re-timed together (cached on the exhaustive study, per CPU):
    ``{"configs": {config key: {ratio, low, high}}, "fp32_self": {...}, cpu, when, ...}``."""
    cpu = C.cpu_facts()
    stored = full.study.user_attrs.get(RETIMED)
    if stored and not again and stored.get("cpu") == cpu and stored.get("passes") == passes:
        return dict(stored)
    with C.scratch("search-quality-models-") as tmp:
        paths, sha_of = _build_models(full, session, tmp)
        ratios = _time_passes(paths, session, passes)

    def figures(values: list[float]) -> dict[str, float]:
        return {"ratio": float(np.median(values)), "low": min(values), "high": max(values)}

    table = {
        "configs": {key: figures(ratios[sha]) for key, sha in sha_of.items()},
        "fp32_self": figures(ratios["fp32"]), "models": len(paths), "passes": passes,
        "rounds": session.spec.measure.performance.timed_rounds,
        "runs": session.spec.measure.performance.runs_per_round, "cpu": cpu,
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    self_low, self_high = min(ratios["fp32"]), max(ratios["fp32"])  # fp32 is the reference: 1
    table["configs"][next(k for k, s in sha_of.items() if s == "fp32")] = {
        "ratio": 1.0, "low": min(self_low, 1.0), "high": max(self_high, 1.0)}
    full.study.set_user_attr(RETIMED, table)
    return table
