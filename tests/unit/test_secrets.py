"""Passwords in storage URLs are never shown, whatever URL-reserved characters they hold."""

from __future__ import annotations

import logging
import os
import string
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import ROOT

from quantuna._secrets import RedactingFilter, redact_text, redact_url

RESERVED = ":/?#[]@!$&'()*+,;=%"
PASSWORDS = [f"Se{c}kr1t" for c in RESERVED] + [
    "pw/Sekr1t", "a@b@c", "x:y:z", "p%40ss", "h#sh?q=1&password=2", RESERVED, "Sekr1t" + string.punctuation,
]
TEMPLATES = [
    "postgresql+psycopg2://postgres:{pw}@db.example:5432/optuna",
    "postgresql://postgres:{pw}@db.example/optuna?sslmode=require",
    "mysql+pymysql://root:{pw}@127.0.0.1/optuna",
    "redis://:{pw}@127.0.0.1:6379/0",
    "redis://default:{pw}@127.0.0.1:6379/0?prefix=q",
    "rediss://user:{pw}@cache.example:6380",
]


def _secret_parts(password: str) -> list[str]:
    """The password and its pieces of 4 or more characters (no piece may leak)."""
    pieces = {password, quote(password, safe="")}
    for sep in RESERVED:
        pieces.update(p for p in password.split(sep) if len(p) >= 4 and p != "Se")
    return sorted(pieces - {"kr1t"})  # "kr1t" alone is in every password; "Sekr1t" is not shown


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_url_drops_the_whole_password(template: str, password: str) -> None:
    for pw in (password, quote(password, safe="")):
        url = template.format(pw=pw)
        shown = redact_url(url)
        assert "***" in shown
        assert "Sekr1t" not in shown and "kr1t" not in shown, shown
        for part in _secret_parts(pw):
            assert part not in shown, (url, shown)
        scheme, user = template.split("://")[0], template.split("://")[1].split(":")[0]
        assert shown.startswith(f"{scheme}://{user}:***@"), shown


def test_redact_url_keeps_the_rest_and_masks_query_passwords() -> None:
    assert redact_url("postgresql+psycopg2://bob:s3cret@db:5432/x") == "postgresql+psycopg2://bob:***@db:5432/x"
    assert redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert redact_url("sqlite:////tmp/a@b:c/x.db") == "sqlite:////tmp/a@b:c/x.db"
    assert redact_url("postgresql://db/x?user=u&password=hunter22") == "postgresql://db/x?user=u&password=***"


def test_remembered_passwords_are_scrubbed_from_free_text_and_logs() -> None:
    redact_url("postgresql://u:Zq9/xx@yy@db/optuna")
    message = 'could not translate host name "xx@yy@db" for password Zq9/xx@yy'
    assert "Zq9" not in redact_text(message)
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "pw is %s", ("Zq9/xx@yy",), None)
    assert RedactingFilter().filter(record)
    assert "Zq9" not in record.getMessage()


def test_the_cli_never_prints_a_storage_password(tmp_path: Path) -> None:
    """`validate`/`show` with a PostgreSQL URL that cannot connect: one line, no password."""
    spec = ROOT / "studies" / "digits.yaml"
    url = "postgresql+psycopg2://postgres:pw/Sekr1t@127.0.0.1:1/none"
    for command in (["show", str(spec), "--storage", url], ["export", str(spec), "--storage", url,
                                                             "-o", str(tmp_path / "x.yaml")]):
        proc = subprocess.run(
            [sys.executable, "-m", "quantuna.cli", *command], capture_output=True, text=True,
            timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2, out
        assert "Sekr1t" not in out and "pw/" not in out, out
        assert len(out.strip().splitlines()) == 1, out
