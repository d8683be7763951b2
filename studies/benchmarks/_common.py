"""Shared helpers of the benchmark scripts: paths, the machine and versions, RESULTS.md sections.

Each benchmark script prints one line per figure and rewrites its own section of
``studies/benchmarks/RESULTS.md`` (between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->``),
stamped with the date, the CPU and the versions it ran with.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STUDIES = HERE.parent
CACHE = HERE / "cache"  # git-ignored: exhaustive studies, range caches, scratch storages
RESULTS = HERE / "RESULTS.md"
DIGITS_SPEC = STUDIES / "digits.yaml"
RESNET_SPEC = STUDIES / "resnet18_like.yaml"
QUALITY_SPEC = HERE / "digits_quality.yaml"

warnings.filterwarnings("ignore", module="optuna")
warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")


def quiet() -> None:
    """Keep Optuna's and onnxruntime's per-trial logging out of the benchmark output."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        from optuna.exceptions import ExperimentalWarning

        warnings.filterwarnings("ignore", category=ExperimentalWarning)
    except ImportError:  # pragma: no cover
        pass
    logging.getLogger().setLevel(logging.ERROR)


def cpu_facts() -> dict[str, Any]:
    """The CPU model, its core count and the int8-relevant flags."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        name = found.group(1).strip() if found else name
        found = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(found.group(1).split()) if found else set()
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {"cpu": name, "cores": os.cpu_count(), "simd": simd}


def versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import optuna

    import quantuna

    return {
        "python": platform.python_version(),
        "quantuna": quantuna.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
    }


def stamp() -> str:
    """One line: date, CPU and versions."""
    cpu = cpu_facts()
    simd = "+".join(cpu["simd"]) or "no AVX2"
    vnni = "VNNI" if any("vnni" in f for f in cpu["simd"]) else "no VNNI"
    v = ", ".join(f"{k} {val}" for k, val in versions().items())
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"{when}; {cpu['cpu']}, {cpu['cores']} cores, {simd} ({vnni}); {v}"


def command_line() -> str:
    args = " ".join(sys.argv[1:])
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(STUDIES.parent)
    except ValueError:
        pass
    return f"python {script}{' ' + args if args else ''}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_PREAMBLE = """# quantuna benchmarks

Written by the scripts in this folder (`python studies/benchmarks/run_all.py` runs them all);
each section is rewritten by its own script, stamped with the date, the CPU and the versions it
ran with. Timings come from a shared 2-core machine: every figure is a ratio of times measured in
the same run, repeated and reduced to a median where the script says so. Targets are reported,
not asserted.
"""


def update_results(name: str, title: str, body: str) -> None:
    """Replace (or append) section ``name`` of RESULTS.md."""
    block = (
        f"<!-- begin:{name} -->\n## {title}\n\n"
        f"*{stamp()}*\n\n`{command_line()}`\n\n{body.strip()}\n<!-- end:{name} -->"
    )
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else _PREAMBLE
    pattern = re.compile(rf"<!-- begin:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def say(line: str) -> None:
    """One figure, one line, at once."""
    print(line, flush=True)


def bench_spec(spec_path: Path, workdir: Path, *, full_work: bool = True, **space: Any) -> Any:
    """The spec at ``spec_path`` with its storage and range cache moved under ``workdir``.

    Keyword arguments replace knobs of ``space`` (e.g. ``calibrate_method=[...]``). With
    ``full_work`` (the default) the accuracy criterion is loosened to ``absolute: 1.0`` so that no
    trial is stopped early as hopeless: every trial evaluates all its data and runs the latency
    loop, the same work in every mode a benchmark compares.
    """
    from quantuna.spec import AccuracyCriterion, load_spec

    workdir.mkdir(parents=True, exist_ok=True)
    spec = load_spec(spec_path, storage=f"sqlite:///{workdir / 'study.db'}")
    if space:
        spec = replace(spec, space=spec.space.model_copy(update=space))
    if full_work:
        tuning = spec.tuning.model_copy(update={"accuracy_criterion": AccuracyCriterion(absolute=1.0)})
        spec = replace(spec, tuning=tuning)
    return replace(spec, workdir=workdir / "work")


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh directory under the benchmark cache, removed afterwards."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=CACHE))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Clock:
    """Wall time between Optuna trial callbacks: the full cost of each trial, sampler included."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.durations: list[float] = []

    def start(self, *_: Any) -> None:
        self.last = time.perf_counter()

    def __call__(self, *_: Any) -> None:
        now = time.perf_counter()
        self.durations.append(now - self.last)
        self.last = now


def one_thread_session(path: Path) -> Any:
    """An onnxruntime session of ``path`` on one intra-op thread, sequential, quiet: how the
    raw-onnxruntime benchmarks time a model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def round_robin(sessions: dict[str, Any], feed: dict[str, Any], rounds: int, *,
                block_seconds: float, min_runs: int) -> dict[str, list[list[float]]]:
    """Time every session in ``rounds`` rounds, the order rotating each round; per round a block
    of about ``block_seconds`` of runs (at least ``min_runs``) per model, sized from one run after
    5 warm-up runs. Returns each model's run seconds, one list per round."""
    per_round = {}
    for name, s in sessions.items():
        for _ in range(5):
            s.run(None, feed)
        start = time.perf_counter()
        s.run(None, feed)
        per_round[name] = max(min_runs, int(block_seconds / (time.perf_counter() - start)))
    times: dict[str, list[list[float]]] = {name: [] for name in sessions}
    order = list(sessions)
    for _ in range(rounds):
        order = order[1:] + order[:1]
        for name in order:
            runs = []
            for _ in range(per_round[name]):
                start = time.perf_counter()
                sessions[name].run(None, feed)
                runs.append(time.perf_counter() - start)
            times[name].append(runs)
    return times


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_configs(
    spec: Any, configs: Sequence[Any], *, forget_ranges: bool, calibration: Any = None
) -> tuple[list[float], list[Any]]:
    """Run ``configs`` (enqueued, in order) as trials of a fresh quantuna study of ``spec``.

    Args:
        spec: a ``StudySpec`` whose storage and workdir are scratch (see :func:`bench_spec`).
        configs: the ``QuantConfig`` values to run; each must be a point of the spec's space.
        forget_ranges: empty the range cache after every trial (every trial calibrates).
        calibration: calibration batches replacing the spec's.

    Returns:
        The wall time of each trial (between Optuna's trial callbacks, sampler and storage
        included; the fp32 baseline measured before the first trial is left out) and the
        complete trials.
    """
    import optuna

    import quantuna
    from quantuna.study.run import open_study
    from quantuna.study.session import prepare

    session = prepare(spec, calibration=calibration)
    study = open_study(session)
    for config in configs:
        params = session.space.params_for(config)
        if params is None:
            raise ValueError(f"{config.summary()} is not in the space of {spec.where}")
        study.enqueue_trial(params)
    clock = Clock()

    def forget(*_: Any) -> None:
        if forget_ranges:
            shutil.rmtree(spec.workdir / "ranges", ignore_errors=True)

    result = quantuna.tune(spec, n_trials=len(configs), on_ready=clock.start, callbacks=[clock, forget],
                           calibration=calibration)
    trials = result.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(clock.durations) != len(configs) or len(trials) != len(configs):
        raise RuntimeError(f"expected {len(configs)} complete trials, got {len(trials)}")
    return clock.durations, trials
