"""Small helpers every layer may use: file hashes and locks, YAML reading, user-code import.

Nothing here imports onnx, onnxruntime or optuna.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantuna.errors import SpecError


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the ``with`` block (other local processes wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def import_reference(ref: str, *, where: str) -> Any:
    """Import ``package.module:name`` or ``path/to/file.py:name``, which the user named.

    Code is imported only because the user named it in the spec or the API.
    """
    module_name, _, attr = ref.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"{where}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    if not hasattr(module, attr):
        raise SpecError(f"{where}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    name = "quantuna_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
