"""The attr schema: every key quantuna stores on a study or a trial, spelled once.

The bottom module of :mod:`quantuna.study`: everything else reads and writes attrs through these
names. A trial's user attrs are flat and short, so optuna-dashboard shows them readably.
"""

from __future__ import annotations

import platform
import socket

import optuna

# study user attrs
BASELINE = "baseline"  # the fp32 measurement: values, throughput, accuracy_target, host, cpu
SENSITIVITY = "sensitivity"  # the node ranking: [{node, op_type, loss}]
SETUP = "quantuna"  # how the study was made: mode, objectives, higher_is_better
FAILED_SETTING = "failed_setting:"  # + key: a setting that fails for this model {setting, reason, trial}
PREPARATION = "preparation"  # what model preparation applied (see quantuna.ort.prepare)

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
INT8_OPS = "int8_ops"  # integer computations in the quantized file (0: it is the fp32 model)
INT8_OP_TYPES = "int8_op_types"  # those computations by op type
AS_FP32 = "is_fp32"  # True: the config quantized nothing, the trial answered with the baseline

# the constraint's name for Optuna 5's trial.set_constraint
ACCURACY_CONSTRAINT = "accuracy"

FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


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


def count_spent(study: optuna.Study) -> int:
    """Trials that used up budget: complete ones and those that failed for a stated reason.

    A trial interrupted by Ctrl-C or a killed worker has no reason and does not count, so the
    study's budget holds when it is resumed.
    """
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.state != optuna.trial.TrialState.FAIL or FAIL_REASON in t.user_attrs
    )
