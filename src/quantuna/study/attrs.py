"""The attr schema: every key quantuna stores on a study or a trial, spelled once.

The bottom module of :mod:`quantuna.study`: everything else reads and writes attrs through these
names. A trial's user attrs are flat and short, so optuna-dashboard shows them readably.
Imports no optuna, so the CLI can read attrs without paying for it at ``--help``.
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

# study user attrs
BASELINE = "baseline"  # the fp32 measurement: values, throughput, accuracy_target, host, cpu
SENSITIVITY = "sensitivity"  # the node ranking: [{node, op_type, loss}]
FALLBACK = "fallback"  # exclude_sensitive_nodes: auto: {prefix, nodes, evaluations}
SETUP = "quantuna"  # how the study was made: mode, objectives, higher_is_better
SPEC_PATH = "spec"  # the spec file the study was made from (load_results(study) reads it)
CONFIRMED = "confirmed"  # the confirm phase: fp32 and each front trial re-timed together
FAILED_SETTING = "failed_setting:"  # + key: a setting that fails for this model {setting, reason, trial}
PREPARATION = "preparation"  # what model preparation applied (see quantuna.ort.prepare)

# trial user attrs
CONFIG = "config"
CONFIG_KEY = "config_key"
SUMMARY = "summary"
HOST = "host"
CPU = "cpu"
CPU_CORES = "cpu_cores"  # physical cores
CPU_ISA = "cpu_isa"  # the ISA features that decide int8 speed (avx2, avx512f, VNNI, AMX)
THREADS = "threads"  # {latency: intra-op threads of the timing loop, accuracy: of the evaluation}
LATENCY = "latency"  # ms, fp32_ms, ratio, low, high (95 % interval), rounds, runs
VALUES = "values"
RELATIVE = "relative"
CONSTRAINT = "constraint"
FEASIBLE = "feasible"
REUSED_FROM = "reused_measurement_from"
SECONDS = "seconds"
MODEL_SHA256 = "model_sha256"
MODEL_BYTES = "model_bytes"
THROUGHPUT = "throughput"
CALIBRATION_REUSED = "calibration_reused"
FOOTPRINT_METHOD = "footprint_method"  # what measured the footprint: vmhwm|peak_wset|ru_maxrss|sampled
CALIBRATION_PEAK_MIB = "calibration_peak_mib"  # resident-memory rise while calibrating (computed now)
WEIGHTED_SCORE = "weighted_ratio_score"
FAIL_REASON = "fail_reason"
STOP_REASON = "stop_reason"  # stopped early, the target out of reach (COMPLETE, infeasible)
STOPPED_EARLY = "stopped_early"  # {samples, of, accuracy, best_possible, accuracy_is, latency_is}
PRUNE_REASON = "prune_reason"  # the study's pruner stopped the accuracy pass (weighted mode)
INT8_OPS = "int8_ops"  # integer computations in the quantized file (0: it is the fp32 model)
INT8_OP_TYPES = "int8_op_types"  # those computations by op type
AS_FP32 = "is_fp32"  # True: the config quantized nothing, the trial answered with the baseline

# short flat attrs for optuna-dashboard's attr box, capitalised so that its alphabetical order
# shows them first: "<Label with unit>" ("0.0503 (+15.3% vs fp32)"), "Feasible", "Role"
FEASIBLE_SHOWN = "Feasible"
ROLE = "Role"  # "fp32" (the baseline model as a trial) or "int8"

# the constraint's name for Optuna 5's trial.set_constraint
ACCURACY_CONSTRAINT = "accuracy"

INT8_ISA = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8",
            "asimddp", "i8mm")  # x86 and Arm dot-product features


def _cpuinfo() -> tuple[str | None, int | None, list[str]]:
    """Model name, physical cores and int8-relevant ISA flags from /proc/cpuinfo (Linux)."""
    name, cores, flags = None, set(), set()
    physical = "0"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and name is None:
                    name = value
                elif key == "physical id":
                    physical = value
                elif key == "core id":
                    cores.add((physical, value))
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        return None, None, []
    return name, len(cores) or None, [f for f in INT8_ISA if f in flags]


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return os.cpu_count()


def host_facts() -> dict[str, Any]:
    """The host, its CPU model, physical cores and int8 ISA features, recorded on every trial.

    Latencies compare only on one CPU; VNNI and AMX decide whether int8 pays at all.
    """
    name, cores, isa = _cpuinfo()
    return {
        HOST: socket.gethostname(),
        CPU: name or platform.processor() or platform.machine(),
        CPU_CORES: cores or _physical_cores(),
        CPU_ISA: isa,
    }


def named_values(values: dict[str, float], relative: dict[str, float | None],
                 label: Any) -> dict[str, str]:
    """Each objective's value under its label with units and its change against fp32
    (``Performance [ms]``: ``0.0503 (+15.3% vs fp32)``): short, flat user attrs that
    optuna-dashboard's attr box shows whole, where ``values`` and ``config`` are clipped."""
    out = {}
    for name, value in values.items():
        rel = relative.get(name)
        change = "" if rel is None else f" ({(rel - 1) * 100:+.1f}% vs fp32)"
        text = label(name)
        out[text[:1].upper() + text[1:]] = f"{value:.4g}{change}"
    return out
