"""The Toxiproxy client against the real Toxiproxy (``scripts/services up toxiproxy``): a
cut refuses connections until healed, and latency delays every exchange."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from tidings.testing.servers import require, skip_or_fail
from tidings.testing.toxiproxy import Toxiproxy, ToxiproxyError

UPSTREAM = "127.0.0.1:4222"  # NATS answers a connection with an INFO line


def _first_line(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return conn.recv(4)


@pytest.fixture
def proxies() -> Iterator[Toxiproxy]:
    require(f"nats://{UPSTREAM}")
    proxies = Toxiproxy()
    try:
        proxies.version()
    except ToxiproxyError as exc:
        skip_or_fail(str(exc))
    yield proxies
    proxies.close()


def test_a_cut_link_refuses_until_healed(proxies: Toxiproxy) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    port = proxies.create(name, UPSTREAM)
    assert _first_line(port) == b"INFO"
    proxies.cut(name)
    with pytest.raises(OSError):
        _first_line(port)
    proxies.heal(name)
    assert _first_line(port) == b"INFO"


def test_latency_delays_the_link_until_healed(proxies: Toxiproxy) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    port = proxies.create(name, UPSTREAM)
    proxies.latency(name, 300)
    started = time.monotonic()
    assert _first_line(port) == b"INFO"
    assert time.monotonic() - started >= 0.3
    proxies.heal(name)
    started = time.monotonic()
    _first_line(port)
    assert time.monotonic() - started < 0.3


def test_an_unknown_proxy_is_an_error_that_names_it(proxies: Toxiproxy) -> None:
    with pytest.raises(ToxiproxyError, match="no-such-proxy"):
        proxies.cut("no-such-proxy")
