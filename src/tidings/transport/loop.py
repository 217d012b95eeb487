"""The fetch loop every subscription runs: look, nap until woken, look again.

The rules, the same for every broker:

* :func:`fetch_loop` calls ``look`` and returns what it found as soon as it found
  anything (possibly fewer than asked for); otherwise it naps and looks again, until
  ``timeout`` has passed. It looks at least once, also with ``timeout=0``.
* The ``wake`` event is cleared *before* each look, so that what arrives during a look
  (a local publish, a record from the server, a rebalance notice) cuts the next nap
  short instead of being slept through.
* A nap lasts until the timeout, or less if ``idle(now)`` says so (a poll interval, a
  nack's pause ending, a heartbeat or sync falling due), never below zero.
* :class:`Backoff` is the poll interval of a broker that cannot push (the SQLite log):
  naps double from :data:`MIN_NAP` up to a maximum and start over when records come,
  so an idle log costs a few reads a second and a busy one is read back to back.

``look`` and ``idle`` are the subscription's own; the loop knows no broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["MIN_NAP", "Backoff", "fetch_loop"]

T = TypeVar("T")
MIN_NAP = 0.001  # seconds: the first idle nap of a polling fetch


async def fetch_loop(
    timeout: float,
    wake: asyncio.Event,
    look: Callable[[], Awaitable[list[T]]],
    idle: Callable[[float], float],
) -> list[T]:
    """What ``look`` finds within ``timeout`` seconds; see the module rules."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        wake.clear()  # before looking: a wake-up during the look is not lost
        out = await look()
        now = time.monotonic()
        if out or now >= deadline:
            return out
        nap = max(0.0, min(deadline - now, idle(now)))
        try:
            async with asyncio.timeout(nap):
                await wake.wait()
        except TimeoutError:
            pass


class Backoff:
    """Idle naps that double from :data:`MIN_NAP` up to ``longest`` seconds."""

    __slots__ = ("_longest", "_nap")

    def __init__(self, longest: float) -> None:
        self._longest = longest
        self._nap = MIN_NAP

    def reset(self) -> None:
        """Records came: look again at once next time (they come in bursts)."""
        self._nap = MIN_NAP

    def next(self) -> float:
        """The next nap; each one is twice the last, up to ``longest``."""
        nap = self._nap
        self._nap = min(nap * 2, self._longest)
        return nap
