"""Passwords in storage URLs: never printed, logged or exported, whatever characters they hold.

:func:`redact_url` is the one function every printer uses (``run``, ``show``, ``validate``,
errors, exports, the study note). It drops the whole password:

- the driver's own reading: SQLAlchemy's ``make_url`` for SQLAlchemy URLs, ``urllib.parse`` then
  ``unquote`` for ``redis://`` (what redis-py's ``from_url`` does);
- and, because a password with an unescaped ``/``, ``@``, ``#`` or ``?`` is read differently by
  different parsers, everything between ``scheme://user:`` and the *last* ``@`` as well. Masking a
  superset is safe; showing part of a password is not.

``password=`` query parameters are masked too. Every password seen is remembered (in this
process) so :func:`redact_text` can scrub it from free text: a driver's error message, a log line.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SCRUBBED = 3  # shorter passwords are masked in URLs, not searched for in free text
_SCHEME = re.compile(r"^([A-Za-z][\w+.-]*://)(.*)$", re.S)
_URL_IN_TEXT = re.compile(r"[A-Za-z][\w+.-]*://\S+")
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|[?&;])password=)([^&;]*)")
_known: set[str] = set()


def _driver_password(url: str) -> str | None:
    """The password as the storage's driver reads it (``None`` when it finds none)."""
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            raw = urlsplit(url).password
            return unquote(raw) if raw else None
        from sqlalchemy.engine import make_url

        password = make_url(url).password
        return None if password is None else str(password)
    except Exception:  # noqa: BLE001  (an unparsable URL: the conservative mask still applies)
        return None


def _remember(*secrets: str | None) -> None:
    for secret in secrets:
        if secret and len(secret) >= MIN_SCRUBBED and secret != MASK:
            _known.add(secret)
            _known.add(unquote(secret))


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo and ``password=`` query) replaced by ``***``.

    Example:
        >>> redact_url("postgresql+psycopg2://bob:pw/S@k:r#t?@db:5432/optuna")
        'postgresql+psycopg2://bob:***@db:5432/optuna'
    """
    match = _SCHEME.match(url)
    if match is None:
        return redact_text(url)
    scheme, rest = match.groups()
    driver = _driver_password(url)
    at = rest.rfind("@")
    user, colon, password = rest[:at].partition(":") if at >= 0 else ("", "", "")
    if at >= 0 and colon and not set(user) & set("/?#"):
        _remember(password, driver)
        rest = f"{user}:{MASK}@{rest[at + 1:]}"
    else:
        _remember(driver)
    for _, query_password in _QUERY_PASSWORD.findall(rest):
        _remember(query_password)
    out = scheme + _QUERY_PASSWORD.sub(rf"\1{MASK}", rest)
    return _scrub_known(out)


def remember_url(url: str) -> None:
    """Note the URL's passwords so that :func:`redact_text` scrubs them from any later text."""
    redact_url(url)


def _scrub_known(text: str) -> str:
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_text(text: str) -> str:
    """Free text with every URL in it redacted and every remembered password masked."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _scrub_known(text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks remembered passwords in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known:
            record.msg = redact_text(record.getMessage())
            record.args = None
        return True
