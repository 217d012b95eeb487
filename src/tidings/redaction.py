"""Redaction: the one function every output goes through before it shows a URL, an option
or an error (log lines, CLI errors, the dashboard, trace attributes, dead-letter reasons).

:func:`redact` masks, with ``***``: the password of any ``scheme://user:password@`` in
the text, the value of any option whose name says secret (``password=``, ``token:``,
``sasl.jaas.config=``, ...; ``password_env`` and ``password_file`` name where a secret
is, not the secret), and every secret this process was told of
(:func:`remember_secret`, which :mod:`tidings.credentials` calls for each secret it
reads). It imports nothing of the framework, so every layer may use it.
"""

from __future__ import annotations

import re
import threading

__all__ = ["MASK", "redact", "remember_secret"]

MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()
# user:password@ in any URL-like text.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^:/@\s'\"]*):(?P<secret>[^@/\s'\"]+)@")
# name=value where the name says secret; password_env / password_file hold no secret.
_OPTION = re.compile(
    r"(?P<name>[\w.-]*(?:password|passwd|secret|token|jaas\.config|api[_-]?key)(?!_env|_file)"
    r"[\w.-]*)(?P<eq>\s*[=:]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^&\s,;'\")]+)",
    re.IGNORECASE,
)


def remember_secret(value: str) -> None:
    """From now on :func:`redact` masks ``value`` wherever it appears (short ones excepted:
    masking every "a" would make logs unreadable and protect nothing)."""
    if len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every known secret, URL password and secret-named option masked."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _OPTION.sub(lambda m: f"{m['name']}{m['eq']}{MASK}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
