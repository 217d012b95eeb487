"""API keys: a file of ``client_id:sha256:<hex digest>`` lines, keys never stored in clear.

    # order-api.keys: one client a line; `tidings apikey new CLIENT` prints a key and its line
    checkout:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8

A client sends its key in the ``X-API-Key`` header. Rules:

* Keys are made by :func:`new_key`: 32 random bytes (256 bits), so a plain SHA-256 digest
  is as safe at rest as a slow password hash (argon2, scrypt), which exists to protect
  low-entropy passwords, and it lets a request be checked with one hash and one look-up.
  A key shorter than :data:`MIN_KEY_CHARS` is refused, so a hand-picked password cannot
  slip in as a key.
* A line that is not ``client:sha256:<64 hex>`` fails the start, naming the file and line;
  so does a client id given twice. Blank lines and ``#`` comments are ignored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

HEADER = "x-api-key"
PREFIX = "tk_"
MIN_KEY_CHARS = 32
_CLIENT = re.compile(r"^[A-Za-z0-9._\-@]{1,100}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def new_key() -> str:
    """A fresh API key (256 random bits, URL-safe)."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_line(client_id: str, key: str) -> str:
    """The keys-file line for ``client_id``'s ``key``."""
    if not _CLIENT.match(client_id):
        raise ValueError(f"client id {client_id!r}: use letters, digits and . _ - @ (1-100)")
    return f"{client_id}:sha256:{digest(key)}"


class ApiKeys:
    """The clients of a keys file, looked up by their key's digest."""

    def __init__(self, by_digest: dict[str, str]) -> None:
        self._by_digest = by_digest

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        """Read a keys file; raises ValueError naming the file and line that is wrong."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"API keys file {path}: {exc.strerror or exc}") from None
        by_digest: dict[str, str] = {}
        clients: set[str] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            client, _, rest = line.partition(":")
            scheme, _, hexdigest = rest.partition(":")
            where = f"API keys file {path}, line {number}"
            if not _CLIENT.match(client):
                raise ValueError(f"{where}: expected CLIENT:sha256:HEX, got {line[:40]!r}")
            if scheme != "sha256" or not _DIGEST.match(hexdigest.lower()):
                raise ValueError(
                    f"{where}: client {client!r} needs sha256:<64 hex digits> "
                    "(`tidings apikey new CLIENT` prints the line); keys are never stored in clear"
                )
            if client in clients:
                raise ValueError(f"{where}: client {client!r} is given twice")
            clients.add(client)
            by_digest[hexdigest.lower()] = client
        if not by_digest:
            raise ValueError(f"API keys file {path} has no keys: every request would be refused")
        return cls(by_digest)

    def client(self, key: str) -> str | None:
        """The client id whose key this is, or None."""
        if len(key) < MIN_KEY_CHARS:
            return None
        # Looked up by digest: a timing difference could only tell an attacker about the
        # digest of what they sent, never about a stored key.
        return self._by_digest.get(digest(key))

    def __len__(self) -> int:
        return len(self._by_digest)
