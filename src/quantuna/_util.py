"""Small helpers every layer may use: file hashes, locks and atomic writes, the one safe YAML
reader, bounded quoting of values, user-code import.

Nothing here imports onnx, onnxruntime or optuna.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from quantuna.errors import QuantunaError, SpecError

MAX_QUOTED = 120  # characters of a value quoted in an error message
MAX_YAML_BYTES = 4 << 20  # a spec or a config file is small; a bigger one is not ours
MAX_YAML_NODES = 100_000  # nodes after alias expansion (a "billion laughs" file has 10**9)
MAX_YAML_DEPTH = 100  # levels of nesting (a spec has 4)
_UMASK = os.umask(0o022)  # read once, at import: os.umask can only be read by setting it
os.umask(_UMASK)


def cut(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` on one line, at most ``limit`` characters (``...`` marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def shorten(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a value in an error message."""
    return cut(repr(value), limit)


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write a file so that readers see the old content or the new, never a part.

    A temporary file in the same directory is written, flushed to disk and renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shorten(key, 60)}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], depth: int = 0) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (memoised per node)."""
    if depth > MAX_YAML_DEPTH:
        raise RecursionError  # read_yaml says what is wrong
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_YAML_NODES + 1  # a recursive alias expands forever
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(child, sizes, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, sizes, depth + 1) + _expanded_size(v, sizes, depth + 1)
                        for k, v in node.value)
    else:
        total = 1
    sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
    return sizes[id(node)]


def read_yaml(path: Path, *, what: str) -> dict[str, Any]:
    """Read a YAML mapping safely: no tags that build objects, no duplicate keys, bounded aliases.

    Args:
        path: the file.
        what: how the message names the document (``a study spec``, ``a quantuna config``).

    Raises:
        SpecError: one line naming the file (and the line) and what is wrong.
    """
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise SpecError(f"{path}: {path.stat().st_size} bytes is too big for {what}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise SpecError(f"{path}: its aliases expand past {MAX_YAML_NODES} nodes; refused")
        raw = None if node is None else loader.construct_document(node)
    except RecursionError:  # deeper than we allow, or than PyYAML's recursion can go
        raise SpecError(f"{path}: nested deeper than {MAX_YAML_DEPTH} levels; refused") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}:{line} not valid YAML ({cut(problem)})") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: {what} is a YAML mapping, got {type(raw).__name__}")
    return raw


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_dir() -> Path:
    """The per-user folder of quantuna's lock files, created 0700 (``$XDG_RUNTIME_DIR`` or /tmp).

    Raises:
        QuantunaError: the folder exists but is a symlink, not ours, or open to others.
    """
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    directory = Path(base) / f"quantuna-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise QuantunaError(f"{directory} is not a folder owned by you; remove it (quantuna keeps "
                            "its lock files there)")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)
    return directory


def lock_path(resource: Path | str) -> Path:
    """The lock file of a resource: a file path (by its absolute name) or a plain name."""
    if isinstance(resource, Path):
        digest = hashlib.sha256(str(resource.absolute()).encode()).hexdigest()[:24]
        return lock_dir() / f"{resource.name[:40]}-{digest}.lock"
    return lock_dir() / f"{resource}.lock"


def open_lock_file(path: Path) -> int:
    """A lock file's descriptor, opened 0600 without following a symlink.

    Raises:
        QuantunaError: it cannot be opened (a planted symlink, a foreign file).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        raise QuantunaError(f"cannot open the lock file {path} ({exc.strerror}); "
                            "if it is a symlink, remove it") from None


@contextlib.contextmanager
def file_lock(resource: Path | str) -> Iterator[None]:
    """An exclusive advisory lock on ``resource`` for the ``with`` block (local processes wait).

    The lock file lives in :func:`lock_dir`, never beside the resource (a failed step leaves
    nothing there), and is opened without following a symlink.
    """
    fd = open_lock_file(lock_path(resource))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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


def check_writable_dir(directory: Path, *, where: str) -> None:
    """Refuse a folder quantuna will create or write in, when it cannot; nothing is created."""
    parent = Path(directory).absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK) or _is_pseudo_fs(parent):
        raise SpecError(f"{where}: cannot write in {cut(str(directory), 160)} ({parent} is not a "
                        "writable directory)")


def check_own_dir(directory: Path, *, where: str) -> None:
    """Refuse a cache folder someone else could have filled: a symlink, another user's, or one
    anyone may write to (a spec in /tmp and a planted ``<stem>.quantuna/``). Absent is fine."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & stat.S_IWOTH):
        raise SpecError(
            f"{where}: {cut(str(directory), 160)} is not a folder of yours that only you may write "
            f"(owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); remove it or fix it"
        )


def check_output_path(path: Path, *, where: str) -> Path:
    """Refuse, before any work, an output path that cannot be written; nothing is created.

    Raises:
        SpecError: the path is a directory, or its nearest existing parent is not a writable
            directory.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise SpecError(f"{where}: {cut(str(path), 160)} is a directory; give a file name")
    check_writable_dir(path.absolute().parent, where=where)
    return path


def _is_pseudo_fs(directory: Path) -> bool:
    """/proc and /sys accept no regular files, even from root."""
    resolved = directory.resolve()
    return any(resolved == Path(p) or Path(p) in resolved.parents for p in ("/proc", "/sys"))
