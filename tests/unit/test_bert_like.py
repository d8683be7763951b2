"""studies/bert_like.py without torch: the build fails in one line naming the pip command."""

from __future__ import annotations

import builtins
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from conftest import STUDIES

from quantuna.errors import SpecError
from quantuna.model import build_model


def _without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_the_build_without_torch_is_one_line_with_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_torch(monkeypatch)
    with pytest.raises(SpecError) as info:
        build_model(tmp_path / "bert_like.onnx", f"{STUDIES / 'bert_like.py'}:build", where="bert_like.yaml")
    message = str(info.value)
    assert "pip install torch==2.13.0 transformers onnx" in message and "\n" not in message
    assert not list(tmp_path.iterdir())


def test_token_data_is_seeded_padded_and_int64() -> None:
    spec = importlib.util.spec_from_file_location("bert_like_study", STUDIES / "bert_like.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a, b = module.make_tokens(8, 1), module.make_tokens(8, 1)
    assert all((a[k] == b[k]).all() and a[k].dtype.name == "int64" for k in module.INPUTS)
    assert ((a["input_ids"] == 0) == (a["attention_mask"] == 0)).all()  # padding is masked
    assert (a["input_ids"][:, 0] == 101).all()


def test_the_shipped_spec_is_valid_and_searches_the_transformer_knobs() -> None:
    from quantuna.spec import load_spec

    spec = load_spec(STUDIES / "bert_like.yaml")
    assert spec.model_build and spec.model_build.endswith("bert_like.py:build")
    assert set(spec.space.approach) == {"dynamic", "weight_only"}
    assert spec.space.graph_optimization == ["none", "bert"]
