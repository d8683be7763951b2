"""optuna-dashboard for quantuna studies: trial artifacts, the study note, and the server.

- Each trial's config (YAML) and, when the spec asks for it, its quantized model are uploaded to
  an Optuna :class:`~optuna.artifacts.FileSystemArtifactStore` in ``<workdir>/artifacts``, so the
  dashboard shows them on the trial's page.
- At the end of a run :func:`write_study_note` saves a Markdown note on the study: the baseline,
  the accuracy target, the feasible Pareto set and the trial the export would pick.
- :func:`serve` starts optuna-dashboard on the spec's storage and artifact directory, bound to
  127.0.0.1 unless told otherwise.

Feasibility: optuna-dashboard 0.21 reads only the legacy ``constraints`` trial system attribute,
so :mod:`quantuna.study` writes it beside Optuna 5's ``trial.set_constraint``; the dashboard's
Pareto chart, timeline and "include infeasible trials" filter then see quantuna's infeasible
trials. Its "Best Trials" ignore constraints altogether; :func:`serve` corrects them (see
:func:`make_best_trials_feasible`).

optuna-dashboard is an extra: ``pip install 'quantuna[dashboard]'``. Without it the study note is
skipped (with a debug log) and :func:`serve` raises a :class:`~quantuna.errors.QuantunaError`.
"""

from __future__ import annotations

import errno
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler

from quantuna.errors import QuantunaError, SpecError

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from quantuna.spec import StudySpec

logger = logging.getLogger(__name__)
DASHBOARD_EXTRA = "pip install 'quantuna[dashboard]'"
MISSING_DASHBOARD = f"optuna-dashboard is not installed: {DASHBOARD_EXTRA}"
CONFIG_ARTIFACT = "config.yaml"


def artifact_dir(spec: StudySpec) -> Path:
    """The study's artifact directory: ``<workdir>/artifacts``."""
    return spec.workdir / "artifacts"


def artifact_store(spec: StudySpec) -> FileSystemArtifactStore:
    """The Optuna artifact store of a study (a directory beside its range cache)."""
    from optuna.artifacts import FileSystemArtifactStore

    directory = artifact_dir(spec)
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))


def upload_trial_artifacts(
    study: optuna.Study,
    trial: optuna.Trial,
    config_yaml: str,
    model_path: Path | None,
    spec: StudySpec,
) -> None:
    """Attach a trial's config (as ``config.yaml``) and optionally its model to the trial.

    Called from the trial function; an upload that fails logs a warning and never fails the trial.

    Args:
        study: the study the trial belongs to.
        trial: the running trial.
        config_yaml: the trial's QuantConfig as YAML.
        model_path: the quantized model to attach (pass it when the spec saves models), or None.
        spec: the study spec (it names the artifact directory).
    """
    import optuna

    try:
        store = artifact_store(spec)
        with tempfile.TemporaryDirectory(prefix="quantuna-artifact-") as tmp:
            config_file = Path(tmp) / CONFIG_ARTIFACT
            config_file.write_text(config_yaml, encoding="utf-8")
            optuna.artifacts.upload_artifact(
                artifact_store=store,
                file_path=str(config_file),
                study_or_trial=trial,
                mimetype="application/yaml",
                encoding="utf-8",
            )
        if model_path is not None:
            optuna.artifacts.upload_artifact(
                artifact_store=store,
                file_path=str(model_path),
                study_or_trial=trial,
                mimetype="application/octet-stream",
            )
    except Exception as exc:  # noqa: BLE001  (an artifact must never fail the trial)
        logger.warning(
            "study %r trial %d: could not upload its artifacts to %s: %s: %s",
            study.study_name,
            trial.number,
            artifact_dir(spec),
            type(exc).__name__,
            exc,
        )


def study_note(result: Any) -> str:
    """The Markdown note written on the study (see :func:`write_study_note`)."""
    from quantuna.report import summary_facts
    from quantuna.results import format_value, objective_labels, pareto_rows

    facts = summary_facts(result)
    lines = [f"## quantuna: {facts.pop('study')}", ""]
    base = result.baseline.get("values", {})
    labels_values = ", ".join(
        f"{label} {format_value(base.get(name))}"
        for name, label in zip(result.objective_names, objective_labels(result))
    )
    lines += [f"- **fp32 baseline**: {labels_values}"]
    lines += [f"- **{key}**: {_md(value)}" for key, value in facts.items()]
    header, rows = pareto_rows(result)
    lines += ["", "### Feasible Pareto set", ""]
    if result.pareto:
        lines.append("| " + " | ".join(_md(h) for h in header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    else:
        lines.append("No trial meets the accuracy target yet.")
    if result.trials:
        pick = result.pick("weighted")
        spec_path = result.session.spec.path if result.session is not None else None
        lines += [
            "",
            "### Export",
            "",
            (
                f"`quantuna export {spec_path or 'SPEC'} -o best.yaml` writes trial "
                f"{pick.trial.number}; `--trial N` exports another."
            ),
        ]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def write_study_note(result: Any) -> None:
    """Save the study note (baseline, target, feasible Pareto set, export pick) for the dashboard.

    Skipped, with a debug log, when optuna-dashboard is not installed; a note that cannot be
    written logs a warning (the study's results are already stored).

    Args:
        result: the :class:`~quantuna.results.TuneResult` of the run.
    """
    try:
        from optuna_dashboard import save_note
    except ImportError:
        logger.debug("optuna-dashboard is not installed: no study note written")
        return
    try:
        save_note(result.study, study_note(result))
    except Exception as exc:  # noqa: BLE001  (the results are stored; the note is a view)
        logger.warning("could not write the study note: %s: %s", type(exc).__name__, exc)


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def _check_storage(spec: StudySpec) -> None:
    url = spec.storage
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise SpecError(
                f"{spec.where}: no study storage at {path}; run `quantuna run {spec.where}` first"
            )


def study_path(spec: StudySpec, storage: optuna.storages.BaseStorage) -> str:
    """The dashboard's path of the spec's study (``/dashboard/studies/<id>``), or its home page."""
    try:
        return f"/dashboard/studies/{storage.get_study_id_from_name(spec.name)}"
    except KeyError:  # no such study yet
        return "/dashboard/"


def _is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def make_best_trials_feasible(storage: Any) -> None:
    """Make optuna-dashboard's "Best Trials" honour the trials' constraints.

    optuna-dashboard 0.21 computes them without constraints, so it labels infeasible trials
    "Best Trial" (its Pareto chart and its infeasible-trials filter do read the legacy
    ``constraints`` attribute). This narrows its Pareto-front function to feasible trials and
    gives ``storage`` a ``get_best_trial`` that prefers the best feasible trial. A study without
    constraints is unchanged. Does nothing on an optuna-dashboard without that function.

    Args:
        storage: the Optuna storage object the dashboard serves.
    """
    import optuna

    try:
        from optuna_dashboard import _app
    except ImportError:
        return
    original = getattr(_app, "get_pareto_front_trials", None)
    if original is not None and not getattr(original, "quantuna_feasible", False):

        def feasible_front(trials: Any, directions: Any) -> Any:
            return original([t for t in trials if _is_feasible(t)], directions)

        feasible_front.quantuna_feasible = True  # type: ignore[attr-defined]
        _app.get_pareto_front_trials = feasible_front
    unconstrained = storage.get_best_trial

    def get_best_trial(study_id: int) -> optuna.trial.FrozenTrial:
        complete = storage.get_all_trials(
            study_id, deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        )
        feasible = [t for t in complete if _is_feasible(t)]
        directions = storage.get_study_directions(study_id)
        if not feasible or len(directions) != 1:
            return unconstrained(study_id)
        sign = 1 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
        return max(feasible, key=lambda t: (sign * t.value, -t.number))

    storage.get_best_trial = get_best_trial


def serve(
    spec: StudySpec,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run optuna-dashboard on the spec's storage and artifact directory until interrupted.

    It serves ``optuna_dashboard.wsgi`` (the app ``optuna_dashboard.run_server`` runs) from a
    threaded wsgiref server that binds first, so a busy port is a clear error and port 0 picks a
    free one. The dashboard's "Best Trials" honour the accuracy constraint (see
    :func:`make_best_trials_feasible`).

    Args:
        spec: the study spec.
        host: the address to bind (default loopback only: the dashboard can edit the study).
        port: the port; 0 picks a free one.
        on_ready: called with the study's URL once the server listens.

    Raises:
        QuantunaError: optuna-dashboard is not installed, or the address cannot be bound.
        SpecError: the spec's SQLite storage does not exist yet.
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise QuantunaError(MISSING_DASHBOARD) from None
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    from quantuna.storage import make_storage

    _check_storage(spec)
    storage = make_storage(spec.storage)
    make_best_trials_feasible(storage)
    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store(spec))
    try:
        httpd = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        hint = "; pick another --port" if exc.errno == errno.EADDRINUSE else ""
        raise QuantunaError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
        ) from None
    bound_port = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}{study_path(spec, storage)}"
    logger.info("optuna-dashboard for study %r at %s", spec.name, url)
    if on_ready is not None:
        on_ready(url)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
