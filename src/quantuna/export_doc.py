"""The export document of one trial: config, calibration, one provenance block, measured figures.

A file a team commits: every path relative to the YAML's folder (POSIX separators) with its
file's sha256, the storage URL without its password, no timestamp (two exports of one trial are
the same bytes), each measured figure with its unit, and the host facts the latency depends on.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from quantuna._secrets import redact_url
from quantuna._util import atomic_write, sha256_file
from quantuna.errors import QuantunaError
from quantuna.export_files import portable_path, portable_storage
from quantuna.results import TrialResult, TuneResult
from quantuna.study import attrs

logger = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: relative paths, file sha256s, one provenance block, units, host facts
READ_VERSIONS = (1, 2)  # 1: what quantuna wrote before (absolute paths), still applied
HOST_KEYS = (attrs.CPU, attrs.CPU_CORES, attrs.CPU_ISA, attrs.THREADS)  # not the host's name


def versions() -> dict[str, str]:
    """The versions that decide the quantized bytes."""
    out = {}
    for package in ("quantuna", "onnxruntime", "onnx", "optuna", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def _chosen(result: TuneResult, trial: int | None, rule: str,
            allow_infeasible: bool) -> tuple[TrialResult, str, dict[str, Any]]:
    """The trial to export, how it was chosen, and what its pick said."""
    if trial is None:
        pick = result.pick(rule)
        chosen, picked_by = pick.trial, f"rule {pick.rule}"
        said = {"feasible": pick.feasible, "reason": pick.reason, "note": pick.note}
    else:
        matches = [t for t in result.trials if t.number == trial]
        if not matches:
            numbers = ", ".join(str(t.number) for t in result.trials[:20])
            if len(result.trials) > 20:
                numbers += f", ... ({len(result.trials)} in all, the last {result.trials[-1].number})"
            raise QuantunaError(f"trial {trial} is not a complete trial of the study (complete: {numbers})")
        chosen, picked_by = matches[0], "--trial"
        reason = f"trial {trial} does not meet the accuracy target"
        if chosen.stopped_early:  # its accuracy is an estimate on the samples seen before the stop
            reason += " (it stopped early: its accuracy is the metric on part of the evaluation set)"
        said = {"feasible": chosen.feasible, "reason": "" if chosen.feasible else reason, "note": ""}
    if not said["feasible"] and not allow_infeasible:
        raise QuantunaError(f"{said['reason']}; nothing written (export it anyway with --allow-infeasible)")
    if not said["feasible"]:
        logger.warning("trial %d does not meet the accuracy target", chosen.number)
    return chosen, picked_by, said


def _plain(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def export_trial(result: TuneResult, *, trial: int | None = None, rule: str = "weighted",
                 allow_infeasible: bool = False) -> dict[str, Any]:
    """The export document of one trial of a :class:`~quantuna.results.TuneResult`.

    Paths in the returned document are absolute; :func:`write_export` writes them relative to
    the YAML's folder.

    Args:
        result: what :func:`quantuna.tune` (or :func:`quantuna.load_results`) returned.
        trial: a trial number; default: the trial ``rule`` picks.
        rule: a pick rule (``weighted``, ``score``, ``best:<objective>``).
        allow_infeasible: export a trial that misses the accuracy target (the best effort when
            no trial meets it); without it that is an error and nothing is written.

    Raises:
        QuantunaError: no such trial, or it misses the target and ``allow_infeasible`` is False.
    """
    session = result.session
    if session is None:
        raise QuantunaError("export needs the study's session: use quantuna.load_results(spec)")
    chosen, picked_by, said = _chosen(result, trial, rule, allow_infeasible)
    return {
        "quantuna_config": FORMAT_VERSION,
        "config": chosen.config.to_dict(),
        "calibration": _calibration(session),
        "provenance": _plain({
            "study": session.spec.name,
            "trial": chosen.number,
            "picked_by": picked_by,
            "pick_note": said["note"] or None,
            "storage": redact_url(session.spec.storage),
            "source_model": _source_model(session),
            "quantized_model": _plain({"sha256": chosen.model_sha256}) or None,
            "preparation": session.preparation.provenance() if session.preparation else None,
            "versions": versions(),
            "host": _host(result, chosen.number),
        }),
        "measured": _measured(result, chosen, said, session),
    }


def _calibration(session: Any) -> dict[str, Any]:
    source = session.spec.data.calibration
    path = Path(source.path) if source.path else None
    return _plain({
        "path": str(path) if path else None,
        "sha256": sha256_file(path) if path and path.is_file() else None,  # the file's
        "loader": source.loader,
        "inputs": source.inputs_as_plain() if source.inputs else None,
        "constants": dict(source.constants) if source.constants else None,
        "size": source.size,
        "batch_size": session.ranges.batch_size,
        "data_sha256": session.calibration.sha256,  # the arrays', whatever file holds them
    })


def _source_model(session: Any) -> dict[str, str]:
    """The user's file (before preparation): its name, path and sha256."""
    prepared = session.preparation
    path, sha = ((session.model.path, session.model.sha256) if prepared is None
                 else (prepared.source, prepared.source_sha256))
    return {"name": Path(path).name, "path": str(path), "sha256": sha}


def _host(result: TuneResult, number: int) -> dict[str, Any] | None:
    """The CPU facts the trial was measured on (from its attrs): model, cores, ISA, threads."""
    found = [t for t in result.study.get_trials(deepcopy=False) if t.number == number]
    stored = found[0].user_attrs if found else {}
    facts = {k: stored[k] for k in HOST_KEYS if stored.get(k) is not None}
    return facts or None


def _latency(chosen: TrialResult) -> dict[str, Any] | None:
    if chosen.latency is None:
        return None
    renamed = {"low": "ratio_low", "high": "ratio_high"}  # the 95 % interval is of the ratio
    out = {renamed.get(k, k): v for k, v in chosen.latency.items()}
    cpu = None if chosen.cpu is None else chosen.cpu.label  # the CPU these figures were timed on
    return {**out, "confirmed": chosen.confirmed, "cpu": cpu}


def _measured(result: TuneResult, chosen: TrialResult, said: dict[str, Any],
              session: Any) -> dict[str, Any]:
    names = list(chosen.values)
    return _plain({
        "feasible": chosen.feasible,
        "reason": said["reason"] or None,
        "units": {n: session.objective_unit(n) for n in names},
        "objectives": chosen.values,
        "relative_to_fp32": chosen.relative,
        "baseline": result.baseline.get("values", {}),
        "accuracy_target": result.baseline.get("accuracy_target"),
        "constraint": chosen.constraint,
        "latency": _latency(chosen),
        "model_bytes": chosen.model_bytes,
    })


def portable(document: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``document`` with its paths and SQLite storage relative to ``directory`` (a copy)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in document.items()}
    calibration, provenance = out.get("calibration") or {}, out.get("provenance") or {}
    if calibration.get("path"):
        calibration["path"] = portable_path(calibration["path"], directory)
    source = provenance.get("source_model")
    if isinstance(source, dict) and source.get("path"):
        provenance["source_model"] = {**source, "path": portable_path(source["path"], directory)}
    if provenance.get("storage"):
        provenance["storage"] = portable_storage(provenance["storage"], directory)
    return out


def write_export(document: dict[str, Any], out: str | Path) -> Path:
    """Write an export document as YAML, its paths relative to the file's folder (atomically:
    the file is whole or absent)."""
    out = Path(out)
    shown = portable(document, out.resolve().parent)
    return atomic_write(out, yaml.safe_dump(shown, sort_keys=False))
