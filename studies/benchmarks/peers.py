"""Figure 8: quantuna beside NNCF and Neural Compressor 2.6 on the same models and data, one sitting.

Each peer is installed in its own venv under ``~/.cache/quantuna/peers/`` (made on first use with
pip: ``nncf``; ``neural-compressor==2.6`` with ``onnx<1.17`` and ``six``) and run in a subprocess
of that venv's python (the drivers in ``_peer_drivers.py``): NNCF's
``quantize_with_accuracy_control`` and INC's ``quantization.fit`` (static, ``strategy: basic``),
both with the digits spec's criterion (relative 1 % top-1 loss). quantuna runs the digits spec's
space and budget (``studies/digits.yaml``, 40 trials) with ``exclude_sensitive_nodes: auto``,
in this process. Three cases:

- **digits**: the shipped example as it is;
- **broken**: the same fp32 function with int8 broken on two layers: Conv0 gets a 33rd output
  channel and Gemm1 a 129th unit, both always 0 after their Relu (zero weights, bias -1); Conv2
  and Gemm3 read them with a weight of 2000 in every output channel, so fp32 ignores it but every
  int8 weight scale of those two layers (per-tensor or per-channel) rounds their other weights
  to 0;
- **outliers**: the digits model, calibration data with 4 of its 200 images (one in 50) x50.

Per tool: the answer's bytes and accuracy (re-measured on the saved file for the peers; the
trial's own figures for quantuna), full evaluations (evaluated samples / the evaluation set), the
wall time of the tool's call (imports left out), and quantuna's time to its first feasible int8
trial. Targets (issue 17): quantuna's first feasible answer at least as small and as accurate as
the best peer's (the smallest feasible peer answer), found in no more wall time than NNCF's; the
whole default-budget study within 3x NNCF's wall time.

Figure 8b (first, ``--methods-only`` alone): the digits default int8 config under each
calibration method, on the clean and on the outlier calibration data (issue 17, point 3).

    python studies/benchmarks/peers.py [--cases digits broken outliers] [--trials 40] [--methods-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _peer_drivers as D  # noqa: E402

VENVS = Path.home() / ".cache" / "quantuna" / "peers"
PACKAGES = {"nncf": ["nncf", "onnx", "onnxruntime"],  # nncf does not require onnx itself
            "inc": ["neural-compressor==2.6", "onnx<1.17", "six", "onnxruntime"]}
NAMES = {"nncf": "NNCF", "inc": "Neural Compressor 2.6"}
CASES = ("digits", "broken", "outliers")
OUTLIER = 2000.0


def peer_python(name: str) -> Path:
    """The python of peer ``name``'s venv, made and filled with pip on first use."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    if not (venv / "ready").is_file():
        C.say(f"installing {' '.join(PACKAGES[name])} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES[name]], check=True)
        (venv / "ready").write_text("\n".join(PACKAGES[name]) + "\n", encoding="utf-8")
    return python


def peer_versions(name: str) -> str:
    code = ("import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) for p in "
            f"{[p.split('<')[0].split('=')[0] for p in PACKAGES[name]]!r}))")
    out = subprocess.run([str(peer_python(name)), "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def build_broken(src: Path, dst: Path) -> Path:
    """The digits CNN with int8 broken on Conv2 and Gemm3 (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).copy()

    def put(name: str, array: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))

    for layer, reader in (("features.0", "features.2"), ("classifier.1", "classifier.3")):
        w, b = get(f"{layer}.weight"), get(f"{layer}.bias")
        put(f"{layer}.weight", np.concatenate([w, np.zeros((1, *w.shape[1:]), np.float32)]))
        put(f"{layer}.bias", np.concatenate([b, [-1.0]]))  # the new channel: always 0 after Relu
        r = get(f"{reader}.weight")
        extra = np.zeros((r.shape[0], 1, *r.shape[2:]), np.float32)
        extra[(slice(None), 0, *(s // 2 for s in r.shape[2:]))] = OUTLIER
        put(f"{reader}.weight", np.concatenate([r, extra], axis=1))
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def outlier_calibration(src: Path, dst: Path, every: int = 50, factor: float = 50.0) -> Path:
    """The calibration set with one image in ``every`` scaled by ``factor`` (images 0, 50, 100,
    150 of 200: any calibration size of the spec holds one)."""
    x = np.load(src)["x"].copy()
    x[::every] *= factor
    np.savez(dst, x=x)
    return dst


def case_files(case: str, work: Path) -> dict[str, Path]:
    """The model, calibration and evaluation files of ``case``."""
    spec = yaml.safe_load(C.DIGITS_SPEC.read_text(encoding="utf-8"))
    files = {"model": C.STUDIES / spec["model"],
             "calibration": C.STUDIES / spec["data"]["calibration"]["path"],
             "evaluation": C.STUDIES / spec["data"]["evaluation"]["path"]}
    if case == "broken":
        files["model"] = build_broken(files["model"], work / "digits_broken.onnx")
    if case == "outliers":
        files["calibration"] = outlier_calibration(files["calibration"], work / "calib_outliers.npz")
    return files


def relative_loss() -> float:
    spec = yaml.safe_load(C.DIGITS_SPEC.read_text(encoding="utf-8"))
    return float(spec["tuning"]["accuracy_criterion"]["relative"])


def run_peer(name: str, files: dict[str, Path], work: Path) -> dict[str, Any]:
    """One peer on one case, in its venv's python; its driver's JSON line."""
    driver = work / f"{name}_driver.py"
    driver.write_text(D.DRIVERS[name], encoding="utf-8")
    args = [str(peer_python(name)), str(driver), str(files["model"]), str(files["calibration"]),
            str(files["evaluation"]), str(work / f"{name}.onnx"), str(relative_loss())]
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, cwd=work)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def quantuna_spec(files: dict[str, Path], work: Path, trials: int) -> Path:
    """The digits spec on the case's files, written to ``work`` (its range cache beside it)."""
    spec = yaml.safe_load(C.DIGITS_SPEC.read_text(encoding="utf-8"))
    spec["study"].update(name="peers", storage=f"sqlite:///{work / 'quantuna.db'}")
    spec["model"] = str(files["model"])
    spec["data"]["calibration"]["path"] = str(files["calibration"])
    spec["data"]["evaluation"]["path"] = str(files["evaluation"])
    spec["tuning"]["exit_policy"]["max_trials"] = trials
    spec["space"]["exclude_sensitive_nodes"] = "auto"
    path = work / "quantuna.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def import_quantuna() -> None:
    """Import what a study uses before timing one (the peers' times leave their imports out):
    onnxruntime's quantization and its symbolic shape inference (sympy: model preparation),
    SQLAlchemy's ORM and alembic as Optuna's SQLite storage loads them (its migration scripts
    too), optuna-dashboard and matplotlib (the study note): 1-2 s on the shared 2-core machine,
    paid once per process. NNCF's own lazy imports (0.1-0.2 s there) stay in its time."""
    import contextlib

    import matplotlib.figure  # noqa: F401  (the study note's front plot)
    import onnxruntime.quantization  # noqa: F401
    import onnxruntime.tools.symbolic_shape_infer  # noqa: F401
    import optuna

    import quantuna.study.run  # noqa: F401

    with contextlib.suppress(ImportError):
        import optuna_dashboard  # noqa: F401
    optuna.storages.RDBStorage("sqlite:///:memory:")


def run_quantuna(files: dict[str, Path], work: Path, trials: int) -> dict[str, Any]:
    """A real quantuna study of the case; its first feasible int8 trial, its pick and times."""
    import quantuna

    import_quantuna()

    start_wall = time.time()
    start = time.perf_counter()
    result = quantuna.tune(quantuna_spec(files, work, trials))
    seconds = time.perf_counter() - start
    done = sorted((t for t in result.study.trials if t.datetime_complete is not None),
                  key=lambda t: t.datetime_complete)
    first = next((t for t in done if t.user_attrs.get("feasible") and t.user_attrs.get("config", {}).get("approach")),
                 None)
    pick = result.pick()
    pick_trial = result.study.trials[pick.trial.number]
    fallback = result.study.user_attrs.get("fallback") or {}
    measured = sum(1 for t in done if t.user_attrs.get("config", {}).get("approach")
                   and not t.user_attrs.get("reused_measurement_from"))
    answer = {"seconds": seconds, "trials": len(done),  # accuracy passes, stopped early or not
              "evaluations": measured + 1 + len(fallback.get("evaluations", [])),
              "pick": _figures(pick_trial)}
    if first is not None:
        answer["first"] = _figures(first)
        answer["first_seconds"] = first.datetime_complete.timestamp() - start_wall
        answer["first_trial"] = first.number
        answer["setup_seconds"] = min(t.datetime_start for t in done).timestamp() - start_wall
        answer["after_seconds"] = start_wall + seconds - done[-1].datetime_complete.timestamp()
        answer["first_steps"] = first.user_attrs.get("seconds", {})
    return answer


def _figures(trial: Any) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"bytes": int(attrs.get("model_bytes", 0)), "accuracy": float(attrs["values"]["accuracy"]),
            "summary": attrs.get("summary", "")}


METHODS = [("MinMax", None), ("MovingAverage", None), ("Percentile", 99.99), ("Percentile", 99.999),
           ("Entropy", None)]


def calibration_methods(work: Path) -> str:
    """Figure 8b: the digits default int8 config under each calibration method, on the clean and
    on the outlier calibration data (both calibration sizes of the spec), one quantuna trial each."""
    from dataclasses import replace

    from quantuna.spec import AccuracyCriterion
    from quantuna.study.session import prepare

    rows = []
    for case in ("digits", "outliers"):
        (work / case).mkdir()
        path = quantuna_spec(case_files(case, work / case), work / case, len(METHODS) * 2)
        spec = C.bench_spec(path, work / case / "bench", full_work=False, exclude_sensitive_nodes=0,
                            calibrate_method=["MinMax", "MovingAverage", "Percentile", "Entropy"],
                            percentile=[99.99, 99.999])
        # no trial stopped early: every accuracy is the whole evaluation set's
        tuning = spec.tuning.model_copy(update={"accuracy_criterion": AccuracyCriterion(absolute=0.99)})
        spec = replace(spec, tuning=tuning)
        default = prepare(spec).space.default_int8()
        configs = [replace(default, calibrate_method=m, percentile=p, calibration_size=n)
                   for n in (50, 200) for m, p in METHODS]
        _, trials = C.run_configs(spec, configs, forget_ranges=False)
        for config, t in zip(configs, trials):
            rows.append([case, config.calibration_size, config.summary().split(" ")[3].split("/")[0],
                         f"{t.user_attrs['values']['accuracy']:.3f}"])
            C.say(f"methods: {rows[-1]}")
    return ("The default int8 config of `studies/digits.yaml` (static QDQ U8S8, Conv and Gemm) with "
            "each calibration method, on the clean calibration data and on the outlier one (4 of 200 "
            "images x50, one in every 50, so both calibration sizes hold outliers); top-1 on the 500 "
            "evaluation images (fp32 0.978, target 0.968). Percentile at these percentiles cannot cut "
            "2 % of outlier samples; MovingAverage (onnxruntime's MinMax with `moving_average`, "
            "constant 0.01, per calibration batch of 20) can, which is why it is in the default space "
            "and leads the warm start when outliers are detected.\n\n"
            + C.table(["calibration data", "calibration size", "method", "accuracy"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--trials", type=int, default=40, help="quantuna's budget (the digits spec's)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per case; times are medians")
    parser.add_argument("--methods-only", action="store_true",
                        help="only figure 8b (calibration methods on outlier calibration data)")
    args = parser.parse_args()
    C.quiet()
    with C.scratch("peers-methods-") as work:
        C.update_results("peers-calibration", "8b. Calibration methods on outlier calibration data",
                         calibration_methods(work))
    if args.methods_only:
        return
    rows, notes = [], []
    for case in args.cases:
        peers, q = run_case(case, args.trials, args.rounds)
        rows += case_rows(case, peers, q)
        notes.append(case_verdict(case, peers, q))
    versions = "; ".join(f"{NAMES[n]}: {peer_versions(n)}" for n in PACKAGES)
    C.update_results("peers", "8. Peers: NNCF and Neural Compressor", body(rows, notes, versions))


def run_case(case: str, trials: int, rounds: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``rounds`` rounds of (NNCF, INC, quantuna), each quantuna study fresh; the first round's
    answers with each time replaced by the median over the rounds (the machine is shared)."""
    runs: list[tuple[dict[str, dict[str, Any]], dict[str, Any]]] = []
    for r in range(rounds):
        with C.scratch(f"peers-{case}-") as work:
            files = case_files(case, work)
            peers = {name: run_peer(name, files, work) for name in PACKAGES}
            for name, p in peers.items():
                C.say(f"{case} round {r}: {name}: {p['bytes']:,} B, {p['accuracy']:.4f}, "
                      f"{p['evaluations']} evaluations, {p['seconds']:.2f} s")
            q = run_quantuna(files, work, trials)
            C.say(f"{case} round {r}: quantuna: {json.dumps(q, default=str)}")
        runs.append((peers, q))
    peers, q = runs[0]
    for name, p in peers.items():
        p["seconds_rounds"] = [run[0][name]["seconds"] for run in runs]
        p["seconds"] = C.median(p["seconds_rounds"])
    for key in ("seconds", "first_seconds", "setup_seconds", "after_seconds"):
        if key in q:
            q[f"{key}_rounds"] = [run[1].get(key, float("nan")) for run in runs]
            q[key] = C.median(q[f"{key}_rounds"])
    return peers, q


def case_rows(case: str, peers: dict[str, dict[str, Any]], q: dict[str, Any]) -> list[list[Any]]:
    rows = [[case, NAMES[n], f"{r['bytes']:,}", f"{r['accuracy']:.4f}", r["evaluations"],
             f"{r['seconds']:.2f}", "-"] for n, r in peers.items()]
    first = q.get("first")
    rows.append([case, f"quantuna, first feasible (trial {q.get('first_trial', '-')}): "
                 f"{first['summary'] if first else 'none'}",
                 f"{first['bytes']:,}" if first else "-", f"{first['accuracy']:.4f}" if first else "-",
                 "-", "-", f"{q['first_seconds']:.2f}" if first else "never"])
    pick = q["pick"]
    rows.append([case, f"quantuna, pick after {q['trials']} trials: {pick['summary']}", f"{pick['bytes']:,}",
                 f"{pick['accuracy']:.4f}", q["evaluations"], f"{q['seconds']:.2f}", "-"])
    return rows


def case_verdict(case: str, peers: dict[str, dict[str, Any]], q: dict[str, Any]) -> str:
    target = max(r["fp32_accuracy"] for r in peers.values()) * (1 - relative_loss())
    feasible = [r for r in peers.values() if r["accuracy"] >= target] or list(peers.values())
    best = min(feasible, key=lambda r: (r["bytes"], -r["accuracy"]))
    nncf = peers["nncf"]["seconds"]
    first = q.get("first")
    small = first is not None and first["bytes"] <= best["bytes"] and first["accuracy"] >= best["accuracy"]
    fast = first is not None and q["first_seconds"] <= nncf
    whole = q["seconds"] / nncf

    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    text = (f"**{case}**: best peer answer {best['bytes']:,} B at {best['accuracy']:.4f}; quantuna's "
            f"first feasible answer at least as small and as accurate: {met(small)}"
            + (f" ({first['bytes']:,} B at {first['accuracy']:.4f})" if first else " (none)")
            + f"; found within NNCF's {nncf:.2f} s: {met(fast)}"
            + (f" ({q['first_seconds']:.2f} s)" if first else "")
            + f"; whole study {q['seconds']:.1f} s = {whole:.1f}x NNCF's: {met(whole <= 3)} (target <= 3x)."
            + f" Rounds: NNCF {_rounds(peers['nncf'].get('seconds_rounds'))}, quantuna's first feasible "
            + f"{_rounds(q.get('first_seconds_rounds'))}, its whole study {_rounds(q.get('seconds_rounds'))}.")
    if first:
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in q["first_steps"].items() if isinstance(v, (int, float)))
        text += (f" Before quantuna's first trial (spec, fp32 baseline, ranking, fallback, warm start): "
                 f"{q['setup_seconds']:.2f} s; after its last (confirm phase, study note): "
                 f"{q['after_seconds']:.2f} s; its first feasible trial's steps: {steps}.")
    return text


def _rounds(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values or []) + "] s"


def body(rows: list[list[Any]], notes: list[str], versions: str) -> str:
    header = ["case", "tool", "bytes", "accuracy", "full evaluations", "wall s", "first feasible s"]
    return (
        f"Peers ({versions}) each in its own venv, driven by `studies/benchmarks/_peer_drivers.py`; "
        "quantuna in this process with `studies/digits.yaml`'s space and budget plus "
        "`exclude_sensitive_nodes: auto`. One accuracy target for all: the digits spec's "
        f"`relative: {relative_loss()}` top-1 loss (NNCF `max_drop` with `DropType.RELATIVE`, INC "
        "`AccuracyCriterion(relative)`). Cases and targets: see the script's docstring. Wall s: "
        "the tool's call (fp32 evaluation included, imports left out: quantuna's lazy ones too, "
        "see `import_quantuna`); quantuna's includes the "
        "baseline, the sensitivity ranking and the confirm phase. Each case runs in rounds of "
        "(NNCF, INC, quantuna); times are medians over the rounds (per-round values in the notes), "
        "bytes and accuracies the first round's.\n\n"
        + C.table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    )


if __name__ == "__main__":
    main()
