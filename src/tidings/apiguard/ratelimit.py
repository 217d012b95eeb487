"""Per-client rate limits: ``limits``' moving window, answered with 429 and Retry-After.

A limit is written as the ``limits`` package parses it, one or more ``N/period`` joined by
``;``: ``"20/second"``, or ``"10/second;300/minute"`` (a burst of 10 at most, 300 a minute
on average). A moving window of N per period lets a client send N at once and then one
more each time the oldest leaves the window, which is a token bucket's burst and refill
without a hand-written bucket. Counters live in this process's memory (one service
process, one budget): behind several processes each enforces the limit alone.

``Retry-After`` is the whole seconds until the window frees a slot, at least 1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds, when not allowed


def parse_limit(text: str) -> list[RateLimitItem]:
    """The limits in ``text``; raises ValueError with an example of what is expected."""
    try:
        items = parse_many(text)
    except ValueError:
        items = []
    if not items:
        raise ValueError(
            f"rate limit {text!r}: expected N/period, e.g. 20/second or 10/second;300/minute"
        )
    return items


class RateLimiter:
    """Counts requests per client id against every limit of one specification."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.items = parse_limit(text)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, client: str) -> Verdict:
        """Count one request of ``client``, unless one of its limits is used up."""
        for item in self.items:
            if not await self._limiter.test(item, client):
                stats = await self._limiter.get_window_stats(item, client)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                return Verdict(False, wait)
        for item in self.items:
            await self._limiter.hit(item, client)
        return Verdict(True)
