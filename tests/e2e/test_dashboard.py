"""The study as people see it: optuna-dashboard's HTTP API, a real browser, the HTML report.

The dashboard runs as a real ``quantuna dashboard`` subprocess on a digits study made here, with
an accuracy criterion strict enough that some trials are infeasible. The browser is Debian's
Chromium driven by Playwright; the study page, the note and a trial page are saved as
screenshots under ``test-artifacts/`` (``dashboard-study.png``, ``dashboard-note.png``,
``dashboard-trial.png``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from conftest import ROOT, STUDIES

from quantuna.views.report import FRONT_TITLE, INFEASIBLE_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
METRIC_NAMES = ["accuracy (top1)", "performance [ms]", "modelsize [MiB]"]
N_TRIALS = 8


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A digits study where some trials are feasible and some are not, run once for the module.

    ``relative: -0.001`` asks every trial to beat fp32's accuracy (0.978) a little: the default
    int8 trial reaches 0.98 and is feasible, the fp32 trial (enqueued second) is not.
    """
    import quantuna

    root = tmp_path_factory.mktemp("dashboard")
    for sub in ("models", "data"):
        shutil.copytree(STUDIES / sub, root / sub)
    raw = yaml.safe_load((STUDIES / "digits.yaml").read_text())
    raw["study"]["save_models"] = True
    raw["tuning"]["accuracy_criterion"] = {"relative": -0.001}
    raw["tuning"]["exit_policy"] = {"max_trials": N_TRIALS}
    raw["measure"]["performance"] = {"batch_size": 1, "warmup": 5, "iterations": 50, "threads": 1}
    spec = root / "digits.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = quantuna.tune(spec)
    feasible = [t for t in result.trials if t.feasible]
    assert feasible and len(feasible) < len(result.trials), "the study needs both kinds of trial"
    return result


@pytest.fixture(scope="module")
def dashboard(mixed_study: Any) -> Iterator[str]:
    """``quantuna dashboard SPEC --port 0`` in a subprocess; yields the study URL it prints."""
    spec = mixed_study.session.spec.path
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantuna.cli", "dashboard", str(spec), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"(http://127\.0\.0\.1:\d+)(/dashboard/studies/\d+)", line)
        if match is None:
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"quantuna dashboard printed no study URL: {line!r}\n{err}")
        base = match.group(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                _get_json(f"{base}/api/studies")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield match.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _split(url: str) -> tuple[str, int]:
    base, _, study_id = url.partition("/dashboard/studies/")
    return base, int(study_id)


def test_dashboard_binds_loopback_and_prints_the_study_url(
    dashboard: str, mixed_study: Any
) -> None:
    base, study_id = _split(dashboard)
    assert base.startswith("http://127.0.0.1:")
    summaries = _get_json(f"{base}/api/studies")["study_summaries"]
    assert [(s["study_id"], s["study_name"]) for s in summaries] == [(study_id, "digits-int8")]


def test_dashboard_api_sees_constraints_and_metric_names(dashboard: str, mixed_study: Any) -> None:
    base, study_id = _split(dashboard)
    detail = _get_json(f"{base}/api/studies/{study_id}")
    assert detail["objective_names"] == METRIC_NAMES
    trials = {t["number"]: t for t in detail["trials"]}
    complete = [t for t in mixed_study.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == N_TRIALS
    for trial in complete:
        shown = trials[trial.number]
        # the dashboard's feasibility is the one Optuna and quantuna use
        assert shown["constraints"] == [trial.user_attrs["constraint"]]
        assert all(c <= 0 for c in shown["constraints"]) == trial.user_attrs["feasible"]
        assert (trial.constraints["accuracy"] <= 0) == trial.user_attrs["feasible"]
    infeasible = [t for t in trials.values() if any(c > 0 for c in t["constraints"])]
    assert infeasible and len(infeasible) < len(trials)
    # Optuna's own best_trials still honour set_constraint, and so do the dashboard's
    best = {t.number for t in mixed_study.study.best_trials}
    assert best and all(mixed_study.study.trials[n].user_attrs["feasible"] for n in best)
    assert {t["number"] for t in detail["best_trials"]} == best


def test_run_leaves_a_study_note_and_trial_artifacts(dashboard: str, mixed_study: Any) -> None:
    base, study_id = _split(dashboard)
    detail = _get_json(f"{base}/api/studies/{study_id}")
    note = detail["note"]["body"]
    assert "Feasible Pareto set" in note and "fp32 baseline" in note
    assert "accuracy target" in note and "export pick" in note
    pick = mixed_study.pick("weighted").trial.number
    assert f"trial {pick} by Neural Compressor's weighted rule" in note
    for trial in detail["trials"]:
        names = sorted(a["filename"] for a in trial["artifacts"])
        assert "config.yaml" in names, trial["number"]
    measured = [t for t in mixed_study.trials if t.reused_from is None]
    with_model = [
        t for t in detail["trials"] if any(a["filename"].endswith(".onnx") for a in t["artifacts"])
    ]
    assert len(with_model) >= len(measured) > 0
    # the config artifact is served and is the trial's config
    first = detail["trials"][0]
    artifact = next(a for a in first["artifacts"] if a["filename"] == "config.yaml")
    with urllib.request.urlopen(
        f"{base}/artifacts/{study_id}/{first['trial_id']}/{artifact['artifact_id']}", timeout=30
    ) as response:
        served = yaml.safe_load(response.read())
    assert served == mixed_study.study.trials[first["number"]].user_attrs["config"]


CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"


def find_chromium() -> Path | None:
    """The browser the tests drive: ``QUANTUNA_CHROMIUM`` when set (a missing file counts as
    not found), else ``chromium`` or ``chromium-browser`` on PATH."""
    named = os.environ.get("QUANTUNA_CHROMIUM")
    if named:
        return Path(named) if Path(named).is_file() else None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def _chromium() -> Path:
    """The browser, or: outside CI a skip that names the install command; in CI a failure."""
    found = find_chromium()
    if found is None:
        reason = (f"no Chromium found (QUANTUNA_CHROMIUM or PATH): install it with `{CHROMIUM_INSTALL}`;"
                  " `playwright install` cannot download one here")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never `playwright install`)."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install -e '.[dev]' (or pip install playwright)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_browser_shows_metric_names_and_infeasible_trials(
    dashboard: str, browser: Any, mixed_study: Any
) -> None:
    infeasible = sum(1 for t in mixed_study.trials if not t.feasible)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(dashboard, wait_until="networkidle")
    page.wait_for_selector("#graph-pareto-front .main-svg", timeout=30_000)
    page.wait_for_selector("#graph-timeline .legendtext", timeout=30_000)
    text = page.locator("body").inner_text()
    for name in METRIC_NAMES:
        assert name in text, f"{name!r} is not on the study page"
    # the study attrs table (5 rows a page) starts with the answers, the artifacts with the front
    for must in ("Accuracy target", "Export pick", "FP32 baseline", "Feasible trials", "front.png"):
        assert must in text, f"{must!r} is not on the study page"
    pick = mixed_study.pick("weighted").trial.number
    assert f"trial {pick} by Neural Compressor's weighted rule" in text
    # the timeline's legend names the infeasible trials and colours them apart
    legend = page.locator("#graph-timeline .legendtext").all_text_contents()
    assert "Infeasible" in legend, legend
    timeline = page.evaluate(
        "() => document.getElementById('graph-timeline').data.map(d => [d.name, d.x.length])"
    )
    assert dict(timeline).get("Infeasible") == infeasible, timeline
    # the Pareto chart draws the infeasible trials as their own grey trace (#cccccc)
    pareto = page.evaluate(
        "() => document.getElementById('graph-pareto-front').data"
        ".map(d => [String(d.marker && d.marker.color), d.x ? d.x.length : 0])"
    )
    assert ["#cccccc", infeasible] in pareto, pareto
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-study.png"), full_page=True)
    # the feasible-only filter: unticking "Include Infeasible trials" leaves the feasible ones
    page.goto(dashboard + "/smartSelection", wait_until="networkidle")
    page.wait_for_selector("#plot-parallel-coordinate .main-svg", timeout=30_000)
    lines = "() => document.getElementById('plot-parallel-coordinate').data[0].dimensions[0].values.length"
    assert page.evaluate(lines) == len(mixed_study.trials)
    include = page.get_by_label("Include Infeasible trials")
    assert include.is_checked()
    include.click()
    page.wait_for_function(f"() => ({lines})() === {len(mixed_study.trials) - infeasible}")
    # the trial list labels only feasible Pareto trials "Best Trial"
    page.goto(dashboard + "/trials", wait_until="networkidle")
    page.wait_for_selector("text=Trial 0", timeout=30_000)
    best = {t.number for t in mixed_study.study.best_trials}
    assert page.get_by_text("Best Trial", exact=True).count() == len(best) + 1  # + the detail pane
    assert not errors, errors
    page.close()


def _open(browser: Any, url: str, ready: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="networkidle")
    page.wait_for_selector(ready, timeout=30_000)
    return page, errors


def test_browser_note_shows_fp32_the_target_and_the_pick(
    dashboard: str, browser: Any, mixed_study: Any
) -> None:
    """The note: the annotated front as a picture at its top, then the summary."""
    page, errors = _open(browser, dashboard + "/note", "img[alt='the annotated front']")
    image = page.locator("img[alt='the annotated front']")
    page.wait_for_function(
        "() => document.querySelector(\"img[alt='the annotated front']\").naturalWidth > 600"
    )
    assert image.evaluate("img => img.naturalWidth") > 600  # the PNG was served, not a broken icon
    text = page.locator("body").inner_text()
    pick = mixed_study.pick("weighted").trial.number
    for must in ("fp32 baseline", "accuracy target", "export pick",
                 f"trial {pick} by Neural Compressor's weighted rule", "Feasible Pareto set"):
        assert must in text, f"{must!r} is not in the note"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-note.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_browser_trial_page_names_values_and_feasibility(
    dashboard: str, browser: Any, mixed_study: Any
) -> None:
    """A trial's page: named values with units, the change against fp32, feasible, its role."""
    pick = mixed_study.pick("weighted").trial
    page, errors = _open(browser, f"{dashboard}/trials?numbers={pick.number}",
                         f"text=Trial {pick.number}")
    page.wait_for_selector("text=Performance [ms]", timeout=30_000)
    text = page.locator("body").inner_text()
    named = [n[:1].upper() + n[1:] for n in METRIC_NAMES]
    for must in (*named, "vs fp32", "Feasible", "Role", "int8", pick.summary):
        assert must in text, f"{must!r} is not on trial {pick.number}'s page"
    # the attr box lists attrs alphabetically and scrolls after a few: the named ones come first
    keys = sorted(mixed_study.study.trials[pick.number].user_attrs)
    assert keys[:5] == sorted([*named, "Feasible", "Role"]), keys
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-trial.png"), full_page=True)
    page.close()
    fp32 = next(t for t in mixed_study.trials if t.config.is_fp32)  # fp32 is always a trial
    page, more = _open(browser, f"{dashboard}/trials?numbers={fp32.number}",
                       f"text=Trial {fp32.number}")
    page.wait_for_selector("text=Role", timeout=30_000)
    attrs = mixed_study.study.trials[fp32.number].user_attrs
    assert attrs["Role"] == "fp32" and attrs["Performance [ms]"].endswith("(+0.0% vs fp32)")
    assert attrs["Feasible"] == "no: misses the accuracy target"  # the criterion asks more
    page.close()
    assert not errors + more, errors + more


def test_browser_opens_the_report_without_a_network(
    mixed_study: Any, browser: Any, tmp_path: Path
) -> None:
    from quantuna.views.report import write_report

    out = write_report(mixed_study, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1200, "height": 1600})
    requested: list[str] = []

    def block(route: Any) -> None:
        requested.append(route.request.url)
        route.abort()

    page.route(re.compile(r"^(?!file:).*"), block)
    page.goto(out.as_uri(), wait_until="load")
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0"
    )
    assert page.evaluate("typeof Plotly") == "object"
    assert page.locator(".js-plotly-plot").count() >= 3
    infeasible = sum(1 for t in mixed_study.trials if not t.feasible)
    traces = page.evaluate(
        "() => document.querySelector('.js-plotly-plot').data.map(d => [d.name, d.x.length])"
    )
    assert [INFEASIBLE_NAME, infeasible] in traces, traces
    legend = page.locator(".js-plotly-plot").first.locator(".legendtext").all_text_contents()
    assert INFEASIBLE_NAME in legend, legend
    assert requested == []
    ARTIFACTS.mkdir(exist_ok=True)
    assert page.locator("img.front").evaluate("img => img.naturalWidth") > 600
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
    page.close()


# --- without a browser --------------------------------------------------------------------------


def test_report_is_self_contained_with_the_pareto_front(mixed_study: Any, tmp_path: Path) -> None:
    from quantuna.views.report import _figures, write_report

    out = write_report(
        mixed_study,
        tmp_path / "sub" / "report.html",
        png=tmp_path / "front.png",
        png_engine="matplotlib",
    )
    page = out.read_text(encoding="utf-8")
    assert '<script src="http' not in page and "<link " not in page
    assert page.count("Plotly.newPlot") >= 3  # the Pareto front, its projections, the histories
    assert "Pareto front (feasible vs infeasible)" in page
    infeasible = sum(1 for t in mixed_study.trials if not t.feasible)
    title, front = _figures(mixed_study)[0]
    assert title == "Pareto front (feasible vs infeasible)"
    grey = [len(d.x) for d in front.data if d.name == INFEASIBLE_NAME]
    assert grey == [infeasible] and infeasible > 0
    assert json.dumps(INFEASIBLE_NAME) in page
    assert "Optimisation history" in page and "Parameter importances" in page
    for name in METRIC_NAMES:
        assert name in page
    png = (tmp_path / "front.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the page's picture is the PNG's: the annotated front, drawn once for both
    assert FRONT_TITLE in page and base64.b64encode(png).decode("ascii") in page


def test_report_png_with_kaleido_and_chromium(mixed_study: Any, tmp_path: Path) -> None:
    pytest.importorskip("kaleido", reason="kaleido is optional: the matplotlib PNG is tested above")
    _chromium()
    from quantuna.views.report import write_png

    assert write_png(mixed_study, tmp_path / "front.png", engine="kaleido") == "kaleido"
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_cli_writes_html_and_png(mixed_study: Any, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "quantuna.cli",
            "report",
            str(mixed_study.session.spec.path),
            "-o",
            str(tmp_path / "r.html"),
            "--png",
            str(tmp_path / "r.png"),
            "--png-engine",
            "matplotlib",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "wrote" in out.stdout and (tmp_path / "r.html").is_file() and (tmp_path / "r.png").is_file()
    )


def test_importances_rank_the_parameters_most_trials_set() -> None:
    from quantuna.views.report import importance_params

    def objective(trial: optuna.Trial) -> float:
        kind = trial.suggest_categorical("kind", ["a", "b", "fp32"])
        if kind == "fp32":
            return 0.0
        x = trial.suggest_int("x", 0, 3)
        if kind == "a":
            trial.suggest_int("only_a", 0, 1)
        return float(x)

    study = optuna.create_study()
    assert "at least 2" in str(importance_params(study))
    for params in ({"kind": "a", "x": 1, "only_a": 0}, {"kind": "a", "x": 1, "only_a": 0}):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=2)
    assert "set a parameter differently" in str(importance_params(study))
    for params in ({"kind": "fp32"}, {"kind": "b", "x": 2}, {"kind": "b", "x": 3}):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=3)
    # "only_a" is in 2 of 5 trials, "x" in 4 of 5: rank kind and x over those 4
    assert importance_params(study) == (["kind", "x"], 4)


def test_dashboard_without_the_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, mixed_study: Any
) -> None:
    from quantuna.errors import QuantunaError
    from quantuna.study.artifacts import write_study_note
    from quantuna.views.dashboard import serve

    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    with pytest.raises(QuantunaError) as err:
        serve(mixed_study.session.spec, port=0)
    assert str(err.value) == "optuna-dashboard is not installed: pip install 'quantuna[dashboard]'"
    write_study_note(mixed_study)  # skipped quietly: the run must not fail for a missing extra

    from quantuna.cli import main

    assert main(["dashboard", str(mixed_study.session.spec.path)]) == 1


def test_dashboard_cli_without_the_extra(tmp_path: Path) -> None:
    """The real command in a process where optuna_dashboard cannot be imported."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "optuna_dashboard.py").write_text("raise ImportError('blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT / "src")])}
    out = subprocess.run(
        [sys.executable, "-m", "quantuna.cli", "dashboard", str(STUDIES / "digits.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "quantuna: error: optuna-dashboard is not installed: pip install 'quantuna[dashboard]'"
    )


def test_dashboard_refuses_a_busy_port_and_a_missing_storage(
    mixed_study: Any, tmp_path: Path
) -> None:
    import dataclasses
    import socket

    from quantuna.errors import QuantunaError, SpecError
    from quantuna.views.dashboard import serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            QuantunaError, match=f"cannot listen on 127.0.0.1:{port}.*another --port"
        ):
            serve(mixed_study.session.spec, port=port)
    missing = dataclasses.replace(
        mixed_study.session.spec, storage=f"sqlite:///{tmp_path / 'none.db'}"
    )
    with pytest.raises(SpecError, match="run `quantuna run"):
        serve(missing, port=0)
    assert not (tmp_path / "none.db").exists()


# --- artifacts, one trial at a time ---------------------------------------------------------


def test_upload_trial_artifacts_attaches_config_and_model(tmp_path: Path) -> None:
    from quantuna.study.artifacts import artifact_dir, artifact_store, upload_trial_artifacts

    spec = SimpleNamespace(workdir=tmp_path / "work")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not really onnx")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")

    def objective(trial: optuna.Trial) -> float:
        config = "approach: dynamic\n"
        upload_trial_artifacts(trial, config, model, spec)  # type: ignore[arg-type]
        return 1.0

    study.optimize(objective, n_trials=1)
    assert artifact_dir(spec) == tmp_path / "work" / "artifacts"  # type: ignore[arg-type]
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)  # noqa: SLF001 (the test reads Optuna's own storage)
    assert sorted(m.filename for m in metas) == ["config.yaml", "m.onnx"]
    config = next(m for m in metas if m.filename == "config.yaml")
    with artifact_store(spec).open_reader(config.artifact_id) as fh:  # type: ignore[arg-type]
        assert fh.read() == b"approach: dynamic\n"


def test_upload_failure_warns_and_keeps_the_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from quantuna.study.artifacts import upload_trial_artifacts

    blocked = tmp_path / "work"
    blocked.write_text("a file where the artifact directory would go")
    spec = SimpleNamespace(workdir=blocked)
    study = optuna.create_study()

    def objective(trial: optuna.Trial) -> float:
        upload_trial_artifacts(trial, "x: 1\n", None, spec)  # type: ignore[arg-type]
        return 1.0

    with caplog.at_level(logging.WARNING, logger="quantuna.study.artifacts"):
        study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert "could not upload its artifacts" in caplog.text


def test_report_and_note_of_a_weighted_study(tiny_dir: Path, tmp_path: Path) -> None:
    from conftest import tiny_spec, write_spec

    import quantuna
    from quantuna.summary import summarize
    from quantuna.views.report import write_report

    spec = tiny_spec(tiny_dir)
    spec["tuning"] = {**spec["tuning"], "mode": "weighted", "exit_policy": {"max_trials": 4}}
    result = quantuna.tune(write_spec(tiny_dir, spec))
    page = write_report(
        result, tmp_path / "w.html", png=tmp_path / "w.png", png_engine="matplotlib"
    )
    html = page.read_text(encoding="utf-8")
    assert "Optimisation history" in html and "Pareto front (feasible" not in html
    assert "Accuracy against cost (feasible vs infeasible)" in html
    assert (tmp_path / "w.png").stat().st_size > 0
    note = summarize(result).to_markdown()
    assert "(weighted)" in note and "performance [ms]" in note
