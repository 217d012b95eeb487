"""Brokers for the transport conformance suite: add a backend with one line in BROKERS.

Each URL may use ``{tmp}`` (a fresh directory per test) and ``{uid}`` (a fresh suffix);
the suite itself uses fresh topic and group names, so a real broker can be shared.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

BROKERS = [
    pytest.param("memory://conformance-{uid}", id="memory"),
    # Short sessions so that a SIGKILLed member's partitions move within about a second.
    pytest.param("sqlite:///{tmp}/log.db?session_timeout=1&heartbeat_interval=0.2", id="sqlite"),
    pytest.param("kafka://127.0.0.1:9092", id="kafka"),
    pytest.param("nats://127.0.0.1:4222", id="nats"),
]


@functools.cache
def _unreachable(url: str) -> str | None:
    """Why a server URL cannot be reached, or None if it can (a TCP connect is enough)."""
    parts = urlsplit(url)
    if parts.scheme not in ("kafka", "nats"):
        return None
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError as exc:
        return (
            f"{parts.scheme}: {url} is unreachable ({exc}); "
            f"start it with `scripts/services up {parts.scheme}`"
        )
    return None


@pytest.fixture(params=BROKERS)
def transport_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    template: str = request.param
    reason = _unreachable(template)
    if reason:
        # Under CI a missing server is a failure, never a silent skip.
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return template.format(tmp=tmp_path, uid=uuid.uuid4().hex[:10])
