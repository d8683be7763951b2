"""What a study leaves beside its storage for people to look at: trial artifacts and the note.

- Each trial's config (YAML) and, when the spec asks for it, its quantized model are uploaded to
  an Optuna :class:`~optuna.artifacts.FileSystemArtifactStore` in ``<workdir>/artifacts``, so
  optuna-dashboard shows them on the trial's page.
- At the end of a run :func:`write_study_note` saves the study's summary as an optuna-dashboard
  note (skipped, with a debug log, when optuna-dashboard is not installed). Its top is the
  annotated front (:func:`quantuna.frontplot.front_png`: fp32, the target, the feasible front,
  the export pick), uploaded as a study artifact ``front.png`` and shown as an image.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore

from quantuna._compat import study_id
from quantuna.errors import QuantunaError
from quantuna.frontplot import front_png
from quantuna.results import TuneResult
from quantuna.spec import StudySpec
from quantuna.summary import summarize

logger = logging.getLogger(__name__)
CONFIG_ARTIFACT = "config.yaml"
FRONT_ARTIFACT = "front.png"


def artifact_dir(spec: StudySpec) -> Path:
    """The study's artifact directory: ``<workdir>/artifacts``."""
    return spec.workdir / "artifacts"


def artifact_store(spec: StudySpec) -> FileSystemArtifactStore:
    """The Optuna artifact store of a study (a directory beside its range cache)."""
    directory = artifact_dir(spec)
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))


def upload_trial_artifacts(
    trial: optuna.Trial, config_yaml: str, model_path: Path | None, spec: StudySpec
) -> None:
    """Attach a trial's config (as ``config.yaml``) and optionally its model to the trial.

    An upload that fails logs a warning and never fails the trial.

    Args:
        trial: the running trial.
        config_yaml: the trial's QuantConfig as YAML.
        model_path: the quantized model to attach (when the spec saves models), or None.
        spec: the study spec (it names the artifact directory).
    """
    try:
        store = artifact_store(spec)
        with tempfile.TemporaryDirectory(prefix="quantuna-artifact-") as tmp:
            config_file = Path(tmp) / CONFIG_ARTIFACT
            config_file.write_text(config_yaml, encoding="utf-8")
            optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(config_file), study_or_trial=trial,
                mimetype="application/yaml", encoding="utf-8",
            )
        if model_path is not None:
            optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(model_path), study_or_trial=trial,
                mimetype="application/octet-stream",
            )
    except Exception as exc:  # noqa: BLE001  (an artifact must never fail the trial)
        logger.warning(
            "trial %d: could not upload its artifacts to %s: %s: %s",
            trial.number, artifact_dir(spec), type(exc).__name__, exc,
        )


def upload_front_png(result: TuneResult) -> str | None:
    """Upload the annotated front as the study artifact ``front.png``; its dashboard URL path.

    None (with a debug log) when matplotlib is missing or the study has no spec to name the
    artifact store; a failed upload logs a warning.
    """
    if result.session is None:
        return None
    try:
        png = front_png(result)
    except QuantunaError as exc:
        logger.debug("no front picture in the note: %s", exc)
        return None
    try:
        store = artifact_store(result.session.spec)
        with tempfile.TemporaryDirectory(prefix="quantuna-artifact-") as tmp:
            path = Path(tmp) / FRONT_ARTIFACT
            path.write_bytes(png)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=result.study,
                mimetype="image/png",
            )
    except Exception as exc:  # noqa: BLE001  (the results are stored; the picture is a view)
        logger.warning("could not upload the front picture: %s: %s", type(exc).__name__, exc)
        return None
    return f"/artifacts/{study_id(result.study)}/{artifact_id}"


GLANCE = ("Accuracy target", "Export pick", "FP32 baseline", "Feasible trials")


def reserve_glance(study: optuna.Study) -> None:
    """Set the :func:`glance` attrs of a new study to "after the run": optuna-dashboard lists a
    study's attrs in the order they were first set, five a page, so these come first."""
    for key in GLANCE:
        study.set_user_attr(key, "written at the end of a run")


def glance(result: TuneResult, facts: dict[str, str]) -> dict[str, str]:
    """The study's answers as short flat study user attrs, capitalised so that the dashboard's
    alphabetical attr table lists them first: fp32, the target, the feasible count, the pick."""
    target = next((v for k, v in facts.items() if k.startswith("accuracy target")), "")
    feasible = sum(1 for t in result.trials if t.feasible)
    return {
        "Accuracy target": target,
        "Export pick": facts.get("export pick", "no trial yet"),
        "FP32 baseline": facts.get("fp32 baseline", ""),
        "Feasible trials": (f"{feasible} of {len(result.trials)} complete; "
                            f"{len(result.stopped_early)} stopped early (infeasible, grey); "
                            "the Note page draws them all"),
    }


def write_study_note(result: TuneResult) -> None:
    """Save the study note (the annotated front, baseline, target, feasible Pareto set, export
    pick) for the dashboard.

    Skipped, with a debug log, when optuna-dashboard is not installed; a note that cannot be
    written logs a warning (the study's results are already stored).
    """
    try:
        from optuna_dashboard import save_note
    except ImportError:
        logger.debug("optuna-dashboard is not installed: no study note written")
        return
    try:
        summary = summarize(result)
        for key, value in glance(result, summary.facts).items():
            result.study.set_user_attr(key, value)
        image = upload_front_png(result)
        top = f"![the annotated front]({image})\n\n" if image else ""
        save_note(result.study, top + summary.to_markdown())
    except Exception as exc:  # noqa: BLE001  (the results are stored; the note is a view)
        logger.warning("could not write the study note: %s: %s", type(exc).__name__, exc)
