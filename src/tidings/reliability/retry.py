"""Retry policy: exponential backoff with jitter, a limit, and errors not worth retrying.

Hand-written rather than taken from tenacity: the runtime must open a fresh unit of work
per attempt, record the attempt count on the dead letter, and run under a fake clock in
unit tests, which is a dozen lines here and more glue than that around a library.
"""

from __future__ import annotations

import dataclasses
import random

import pydantic


class NonRecoverable(Exception):
    """Raise (or subclass) in a handler for an error that no retry can fix.

    The event goes to the dead letters at once instead of being retried.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing handler is tried again.

    Attempt *n* (1-based) that fails waits ``min(max_delay, initial_delay * multiplier**(n-1))``
    scaled by a random factor in ``[1 - jitter, 1]`` ("equal jitter": retries of many
    consumers spread out instead of stampeding together), then tries again, until
    ``max_attempts`` attempts have failed; then the event is dead-lettered.
    """

    max_attempts: int = 5
    initial_delay: float = 0.05
    multiplier: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.5
    non_recoverable: tuple[type[BaseException], ...] = (NonRecoverable, pydantic.ValidationError)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """After failed attempt ``attempt``, is another one worth making?"""
        if isinstance(error, self.non_recoverable):
            return False
        return attempt < self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the next one."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        factor = 1.0 - self.jitter * (rng or random).random()
        return base * factor
