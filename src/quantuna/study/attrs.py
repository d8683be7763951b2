"""The attr schema: every key quantuna stores on a study or a trial, spelled once.

The bottom module of :mod:`quantuna.study`: everything else reads and writes attrs through these
names. A trial's user attrs are flat and short, so optuna-dashboard shows them readably.
Imports no optuna, so the CLI can read attrs without paying for it at ``--help``.
"""

from __future__ import annotations

import platform
import socket

# study user attrs
BASELINE = "baseline"  # the fp32 measurement: values, throughput, accuracy_target, host, cpu
SENSITIVITY = "sensitivity"  # the node ranking: [{node, op_type, loss}]
FALLBACK = "fallback"  # exclude_sensitive_nodes: auto: {prefix, nodes, evaluations}
SETUP = "quantuna"  # how the study was made: mode, objectives, higher_is_better
SPEC_PATH = "spec"  # the spec file the study was made from (load_results(study) reads it)

# trial user attrs
CONFIG = "config"
CONFIG_KEY = "config_key"
SUMMARY = "summary"
HOST = "host"
CPU = "cpu"
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
WEIGHTED_SCORE = "weighted_ratio_score"
FAIL_REASON = "fail_reason"
STOP_REASON = "stop_reason"
PRUNE_REASON = "prune_reason"  # the study's pruner stopped the accuracy pass (weighted mode)

# the constraint's name for Optuna 5's trial.set_constraint
ACCURACY_CONSTRAINT = "accuracy"

def host_facts() -> dict[str, str]:
    """The host name and CPU, recorded on every trial (latencies compare only on one CPU)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {HOST: socket.gethostname(), CPU: cpu}
