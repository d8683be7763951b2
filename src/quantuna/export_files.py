"""The files an exported config names, made portable: paths relative to the YAML, found by sha256.

``export`` writes each file (the source model, the calibration ``.npz``) as a POSIX path relative
to the YAML's own folder plus its sha256, and a SQLite storage likewise, so the file means the same
in any checkout and two exports of one trial are the same bytes. ``apply`` resolves a path against
the YAML's folder; when the file is not there it looks, in each folder of the search path
(``--search-path DIR``, then the current directory), for the same name, then for any file with
the same suffix and sha256, and otherwise fails with one line naming the file, its sha256 and
where it looked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from quantuna._util import sha256_file
from quantuna.errors import SpecError

logger = logging.getLogger(__name__)
SQLITE = "sqlite:///"


def portable_path(path: str | Path, directory: Path) -> str:
    """``path`` relative to ``directory`` with ``/`` separators (absolute when they share only
    the filesystem root, where a relative path would not survive a move either)."""
    target = Path(os.path.abspath(path))
    base = Path(os.path.abspath(directory))
    try:
        common = Path(os.path.commonpath([target, base]))
    except ValueError:  # another drive (Windows)
        return target.as_posix()
    if common == Path(common.anchor):
        return target.as_posix()
    return PurePosixPath(*Path(os.path.relpath(target, base)).parts).as_posix()


def portable_storage(url: str | None, directory: Path) -> str | None:
    """A SQLite URL with its file relative to ``directory``; other URLs unchanged (already
    redacted by the caller). Provenance only: ``apply`` never opens it."""
    if url is None or not url.startswith(SQLITE) or url in (SQLITE, f"{SQLITE}:memory:"):
        return url
    file, _, query = url[len(SQLITE):].partition("?")
    if not os.path.isabs(file):
        return url
    return SQLITE + portable_path(file, directory) + (f"?{query}" if query else "")


@dataclass(frozen=True)
class RecordedFile:
    """A file as an export recorded it: its path (relative to the YAML or absolute) and sha256."""

    path: str
    sha256: str | None = None
    where: str = "file"

    @property
    def name(self) -> str:
        """The file's name, without its folders (either separator)."""
        return PurePosixPath(self.path.replace("\\", "/")).name


def search_folders(search_path: Sequence[str | Path] = ()) -> list[Path]:
    """The folders ``apply`` searches for a file that is not where the YAML says: each
    ``--search-path`` folder in order, then the current directory."""
    out: list[Path] = []
    for folder in [*search_path, Path.cwd()]:
        resolved = Path(folder).resolve()
        if resolved not in out:
            out.append(resolved)
    return out


def locate(recorded: RecordedFile, base: Path, search_path: Sequence[str | Path] = (), *,
           hint: str = "") -> Path:
    """Where ``recorded`` is now: the recorded path (against ``base``, the YAML's folder), or a
    file of the same name or sha256 in the search folders.

    A file found at its recorded path is used as it is (``apply`` warns later when its content
    differs); one found elsewhere must match the recorded sha256 when there is one.

    Raises:
        SpecError: one line naming the file, its sha256 and the places looked at (then ``hint``,
            another way to give the file).
    """
    first = Path(recorded.path)
    first = Path(os.path.normpath(first if first.is_absolute() else base / first))
    if first.is_file():
        return first
    folders = search_folders(search_path)
    for folder in folders:
        found = _in_folder(folder, recorded)
        if found is not None:
            logger.info("%s: %s is not at %s; using %s (same %s)", recorded.where, recorded.name,
                        first, found, "sha256" if recorded.sha256 else "name")
            return found
    sha = f"sha256 {recorded.sha256}" if recorded.sha256 else "no sha256 recorded"
    looked = ", ".join(str(f) for f in folders)
    raise SpecError(f"{recorded.where}: {recorded.name} ({sha}) is not at {first} nor in {looked}; "
                    f"pass --search-path DIR (the folder that holds it){hint}")


def _in_folder(folder: Path, recorded: RecordedFile) -> Path | None:
    """A file in ``folder`` (not below it) that is ``recorded``: its name first, then any file of
    the same suffix whose sha256 matches."""
    if not folder.is_dir():
        return None
    same_name = folder / recorded.name
    if same_name.is_file() and _matches(same_name, recorded.sha256):
        return same_name
    if recorded.sha256 is None:
        return None
    suffix = PurePosixPath(recorded.name).suffix
    for candidate in sorted(folder.iterdir()):
        if (candidate != same_name and candidate.suffix == suffix and candidate.is_file()
                and _matches(candidate, recorded.sha256)):
            return candidate
    return None


def _matches(path: Path, sha256: str | None) -> bool:
    return sha256 is None or sha256_file(path) == sha256
