"""Credentials and TLS in broker URLs, and the redaction every output goes through.

A secured broker URL names the user in the URL and takes the secret from elsewhere::

    kafka://order@broker:9192?tls_ca=/etc/tidings/ca.pem&password_file=/run/secrets/order
    nats://order@broker:4322?tls_ca=/etc/tidings/ca.pem&password_env=ORDER_NATS_PASSWORD

The rules:

* ``password_env=NAME`` reads the password from the environment variable NAME,
  ``password_file=PATH`` from a file (one trailing newline dropped). A password written
  in the URL itself (``user:secret@``) is refused: URLs end up in shell histories, process
  lists and CI logs. A missing variable or file is an :class:`InvalidBrokerURL` naming it.
* ``tls_ca=PATH`` (the CA that signed the broker's certificate) turns TLS on;
  ``tls=1`` turns it on with the system's CAs; ``tls_cert`` and ``tls_key`` add a client
  certificate. Kafka authenticates a named user with SASL ``sasl_mechanism``
  (default SCRAM-SHA-512); NATS sends user and password in its CONNECT.
* ``{service}`` anywhere in the URL is replaced by the service's name when a service runs
  (:func:`for_service`), so one URL gives each service its own user and secret:
  ``kafka://{service}@broker:9192?password_file=/run/secrets/{service}``.
* Every secret read is remembered in this process, and :func:`redact` (from
  :mod:`tidings.redaction`, re-exported here) replaces it (and anything that looks like a
  password in a URL or an option) with ``***``. Log lines,
  CLI errors, the dashboard and trace attributes go through :func:`redact`; nothing here
  ever puts a secret in an exception message or a ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tidings.redaction import redact, remember_secret
from tidings.transport.errors import InvalidBrokerURL

__all__ = ["Credentials", "for_service", "redact", "remember_secret", "split_credentials"]

SECURITY_OPTIONS = frozenset(
    {"tls", "tls_ca", "tls_cert", "tls_key", "password_env", "password_file", "sasl_mechanism"}
)


def for_service(url: str, service: str) -> str:
    """``url`` with ``{service}`` replaced by the service's name (see the module rules)."""
    return url.replace("{service}", service).replace("%7Bservice%7D", service)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Who connects and how: read from a URL by :func:`split_credentials`."""

    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    sasl_mechanism: str = "SCRAM-SHA-512"

    @property
    def secured(self) -> bool:
        return self.tls or self.username is not None


def split_credentials(url: str) -> tuple[Credentials, str]:
    """The credentials in ``url``, and the URL without them (user and security options
    gone, the other options kept) for the broker's own option parsing."""
    parts = urlsplit(url)
    shown = redact(url)
    if parts.password is not None:
        remember_secret(parts.password)
        raise InvalidBrokerURL(
            f"{shown!r}: a password in the URL is refused; give it as password_env=VARIABLE"
            " or password_file=PATH"
        )
    kept, found = [], {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in SECURITY_OPTIONS:
            found[name] = value
        else:
            kept.append((name, value))
    password = _read_password(shown, found)
    if password is not None and not parts.username:
        raise InvalidBrokerURL(f"{shown!r}: a password needs a user name: scheme://USER@host:port")
    for name in ("tls_ca", "tls_cert", "tls_key"):
        if name in found and not Path(found[name]).is_file():
            raise InvalidBrokerURL(f"{shown!r}: {name}={found[name]!r} is not a readable file")
    if ("tls_cert" in found) != ("tls_key" in found):
        raise InvalidBrokerURL(f"{shown!r}: give tls_cert and tls_key together")
    tls_flag = found.get("tls", "")
    if tls_flag not in ("", "0", "1", "true", "false"):
        raise InvalidBrokerURL(f"{shown!r}: tls={tls_flag!r}: use tls=1 or tls=0")
    credentials = Credentials(
        username=parts.username or None,
        password=password,
        tls=tls_flag in ("1", "true") or "tls_ca" in found or "tls_cert" in found,
        tls_ca=found.get("tls_ca"),
        tls_cert=found.get("tls_cert"),
        tls_key=found.get("tls_key"),
        sasl_mechanism=found.get("sasl_mechanism") or "SCRAM-SHA-512",
    )
    host = parts.netloc.rpartition("@")[2]
    rest = urlunsplit((parts.scheme, host, parts.path, urlencode(kept), parts.fragment))
    return credentials, rest


def _read_password(shown: str, found: dict[str, str]) -> str | None:
    if "password_env" in found and "password_file" in found:
        raise InvalidBrokerURL(f"{shown!r}: give password_env or password_file, not both")
    if "password_env" in found:
        name = found["password_env"]
        value = os.environ.get(name)
        if not value:
            raise InvalidBrokerURL(f"{shown!r}: environment variable {name} is not set")
    elif "password_file" in found:
        path = Path(found["password_file"])
        try:
            value = path.read_text().removesuffix("\n")
        except OSError as exc:
            raise InvalidBrokerURL(
                f"{shown!r}: password_file {str(path)!r} cannot be read ({exc.strerror})"
            ) from None
        if not value:
            raise InvalidBrokerURL(f"{shown!r}: password_file {str(path)!r} is empty")
    else:
        return None
    remember_secret(value)
    return value
