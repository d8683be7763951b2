"""The quick-start notebook runs top to bottom in a real Jupyter kernel (nbclient), as a user would.

The executed copy is saved under ``test-artifacts/`` for the CI log. The committed notebook is
executed too, with its plot as a PNG (it shows on GitHub and in nbconvert's HTML, where plotly's
JSON is blank) and nothing on stderr (no red TqdmWarning).
"""

from __future__ import annotations

import os

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
PUBLIC = (
    "quantuna.tune(",
    "result.pareto",
    "result.best(",
    "quantuna.export_trial(",
    "quantuna.apply(",
    "quantuna.StudyObjective(",
    "quantuna.load_results(",
)


def _read() -> object:
    import nbformat

    return nbformat.read(str(NOTEBOOK), as_version=4)


def _check_outputs(nb: object) -> None:
    """Static images only, and nothing red: what a reader of the notebook sees."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]  # type: ignore[attr-defined]
    kinds = {kind for o in outputs for kind in o.get("data", {})}
    assert "image/png" in kinds, "the front is not a PNG"
    assert not kinds & {"application/vnd.plotly.v1+json", "text/html"}, kinds
    red = [o.get("text", "")[:200] for o in outputs if o.get("name") == "stderr" or o.output_type == "error"]
    assert not red, red


def test_notebook_is_committed_executed_with_static_images() -> None:
    nb = _read()
    code = [c for c in nb.cells if c.cell_type == "code"]  # type: ignore[attr-defined]
    assert code and all(c.execution_count is not None for c in code)
    _check_outputs(nb)


def test_notebook_calls_only_the_public_api() -> None:
    nb = _read()
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")  # type: ignore[attr-defined]
    for call in PUBLIC:
        assert call in source, call
    for line in source.splitlines():
        if "quantuna." in line and "import" in line:
            assert line.strip() in ("import quantuna",) or line.startswith(
                ("from quantuna.export ", "from quantuna.frontplot ")
            ), line
    assert "._" not in source.replace("t.values", "")


def test_quickstart_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    src = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", src)  # the kernel imports this checkout's quantuna
    nb = _read()
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    ARTIFACTS.mkdir(exist_ok=True)
    nbformat.write(nb, str(ARTIFACTS / "quickstart.executed.ipynb"))
    outputs = [out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs]
    text = "".join(outputs)
    assert "10 trials" in text and "on the feasible Pareto front" in text
    assert "same bytes as the measured trial: True" in text
    assert "own study: 8 trials" in text
    assert "accuracy" in text and "ratio" in text
    _check_outputs(nb)
