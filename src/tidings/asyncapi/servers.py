"""The servers of an AsyncAPI document, from the broker URLs a user names (``NAME=URL``).

A broker URL maps to an AsyncAPI server by its scheme:

* ``kafka://host:9092[,host2:9092]`` -> protocol ``kafka``, host the bootstrap list;
* ``nats://host:4222`` -> protocol ``nats``;
* ``sqlite:///./.tidings/log.db`` -> protocol ``sqlite`` (not one AsyncAPI lists: the
  embedded log is a file, no network protocol), host ``localhost``, pathname the file.

Query options (timeouts, partitions) configure our client, not the server, and are
dropped; so are credentials (``user:pass@``), which do not belong in a published
document. ``memory://`` is refused: nothing outside the process can reach it.

Each scheme also says how the codec writes envelopes there (:data:`CONTENT_MODES`, the
``content_mode`` of its transport class; a test holds the two to agreeing): CloudEvents
binary mode on Kafka and the SQLite log, structured mode on NATS.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import urlsplit

from tidings.codec import ContentMode
from tidings.urls import sqlite_path

# scheme -> (AsyncAPI protocol, the content mode its transport writes)
PROTOCOLS: dict[str, tuple[str, ContentMode]] = {
    "kafka": ("kafka", "binary"),
    "nats": ("nats", "structured"),
    "sqlite": ("sqlite", "binary"),
}
CONTENT_MODES: dict[str, ContentMode] = {s: mode for s, (_, mode) in PROTOCOLS.items()}
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")  # AsyncAPI 3.0's pattern for server ids
_DESCRIPTIONS = {
    "kafka": "Apache Kafka. Envelopes in CloudEvents binary mode (ce_* headers).",
    "nats": (
        "NATS JetStream. Envelopes in CloudEvents structured mode; a topic's partition N "
        "is the subject tidings.<topic>.N."
    ),
    "sqlite": (
        "The Tidings embedded log, a SQLite file read by the processes on this host. "
        "Envelopes in CloudEvents binary mode (ce_* headers)."
    ),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Server:
    """One named broker, as the document describes it."""

    name: str
    protocol: str
    host: str
    content_mode: ContentMode
    pathname: str | None = None

    def to_asyncapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "protocol": self.protocol}
        if self.pathname is not None:
            out["pathname"] = self.pathname
        out["description"] = _DESCRIPTIONS[self.protocol]
        return out


def parse_server(spec: str) -> Server:
    """``NAME=URL`` as a :class:`Server`; ``ValueError`` says what is wrong."""
    name, sep, url = spec.partition("=")
    if not sep or not name or not url:
        raise ValueError(f"--server {spec!r}: expected NAME=URL, e.g. prod=kafka://broker:9092")
    if not _NAME.match(name):
        raise ValueError(f"--server {spec!r}: a server name has only letters, digits, - and _")
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        raise ValueError(f"--server {spec!r}: memory:// is in-process only; nothing can reach it")
    if scheme not in PROTOCOLS:
        known = ", ".join(f"{s}://" for s in PROTOCOLS)
        raise ValueError(f"--server {spec!r}: unknown broker scheme {scheme!r} (known: {known})")
    protocol, mode = PROTOCOLS[scheme]
    if scheme == "sqlite":
        path = sqlite_path(url)  # raises ValueError naming the URL
        return Server(name, protocol, "localhost", mode, pathname=path)
    netloc = urlsplit(url).netloc.rpartition("@")[2]  # without credentials
    if not netloc:
        raise ValueError(f"--server {spec!r}: give host and port, e.g. {scheme}://127.0.0.1:PORT")
    return Server(name, protocol, netloc, mode)


def content_mode_of(servers: list[Server]) -> ContentMode | None:
    """The one content mode of ``servers`` (None without servers).

    One document describes one wire format, so servers that differ are an error.
    """
    modes = {s.content_mode for s in servers}
    if len(modes) > 1:
        by_mode = "; ".join(
            f"{mode}: {', '.join(s.name for s in servers if s.content_mode == mode)}"
            for mode in sorted(modes)
        )
        raise ValueError(
            "these servers carry envelopes in different CloudEvents content modes "
            f"({by_mode}); write one document per content mode"
        )
    return next(iter(modes), None)
