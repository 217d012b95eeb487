"""TLS and users on NATS: nats-py's connect options from a URL's credentials, and how to
recognise the server refusing a login or a subject (:mod:`tidings.credentials`)."""

from __future__ import annotations

import logging
import re
import ssl

from tidings.credentials import Credentials

__all__ = ["DENIED", "PUBLISH_DENIED", "connect_options", "refused"]


class _TlsEofNoise(logging.Filter):
    """asyncio warns "returning true from eof_received() has no effect when using ssl"
    each time a TLS server closes a nats-py connection (nats-py's protocol returns True):
    harmless, and it buried the one line a refused login should be. Dropped here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in str(record.msg)


logging.getLogger("asyncio").addFilter(_TlsEofNoise())


DENIED = re.compile(r"permissions violation", re.I)
PUBLISH_DENIED = re.compile(r'permissions violation for publish to "(?P<subject>[^"]+)"', re.I)


def connect_options(credentials: Credentials) -> dict[str, object]:
    """nats-py's keyword arguments for the URL's TLS and user (none: plaintext)."""
    options: dict[str, object] = {}
    if credentials.username is not None:
        options["user"] = credentials.username
        options["password"] = credentials.password or ""
    if credentials.tls:
        context = ssl.create_default_context(cafile=credentials.tls_ca)
        if credentials.tls_cert and credentials.tls_key:
            context.load_cert_chain(credentials.tls_cert, credentials.tls_key)
        options["tls"] = context
    return options


def refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, ssl.SSLError)
        or "authorization violation" in text
        or ("authentication" in text)
    )
