"""URL options (tidings.transport.options) and the fetch loop (tidings.transport.loop)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.transport.errors import InvalidBrokerURL
from tidings.transport.loop import MIN_NAP, Backoff, fetch_loop
from tidings.transport.options import check_heartbeat, url_options


def test_options_convert_and_name_what_is_wrong() -> None:
    known = {"a": float, "n": int, "mode": str}
    assert url_options("x://h/p?a=1.5&n=2&mode=full", known) == {"a": 1.5, "n": 2, "mode": "full"}
    with pytest.raises(InvalidBrokerURL, match="unknown option 'b'; known: a, mode, n"):
        url_options("x://h?b=1", known)
    with pytest.raises(InvalidBrokerURL, match=r"n='1.5' is not a whole number"):
        url_options("x://h?n=1.5", known)
    assert url_options("x://h?lib.x=y", known, passthrough="lib.") == {"lib.x": "y"}
    with pytest.raises(InvalidBrokerURL, match="heartbeat_interval must be below"):
        check_heartbeat("x://h", 2.0, 1.0)


async def test_fetch_loop_returns_what_a_wake_brings_before_the_timeout() -> None:
    wake, box = asyncio.Event(), []

    async def look() -> list[int]:
        return box[:]

    async def publish() -> None:
        await asyncio.sleep(0.05)
        box.append(1)
        wake.set()

    started = time.monotonic()
    task = asyncio.create_task(publish())
    assert await fetch_loop(5.0, wake, look, lambda now: 10.0) == [1]
    assert time.monotonic() - started < 1.0
    await task


async def test_fetch_loop_looks_once_with_no_timeout_and_naps_as_idle_says() -> None:
    looks = 0

    async def look() -> list[int]:
        nonlocal looks
        looks += 1
        return []

    assert await fetch_loop(0, asyncio.Event(), look, lambda now: 1.0) == [] and looks == 1
    await fetch_loop(0.1, asyncio.Event(), look, lambda now: 0.01)
    assert looks > 3


def test_backoff_doubles_up_to_its_longest_and_starts_over() -> None:
    backoff = Backoff(0.004)
    assert [backoff.next() for _ in range(4)] == [MIN_NAP, 0.002, 0.004, 0.004]
    backoff.reset()
    assert backoff.next() == MIN_NAP
