"""The runtime's error policy: what becomes of an event whose handling fails, in one place.

The runtime (:mod:`tidings.runtime`) is a loop that asks this module what to do. Every
failure is classified into one :class:`Action`:

**Dead-letter** (with a :class:`~tidings.reliability.deadletter.DeadLetterReason`: a
:class:`~tidings.reliability.deadletter.DeadLetterKind` and a sentence for people), when no
retry can help. At once, without a retry, when

* the record is not a CloudEvent the codec can read (``undecodable``, :func:`undecodable`);
* it names a registry schema id the registry does not know (``undecodable``,
  :func:`unknown_schema`);
* its data does not fit the schema it was registered with (``invalid``,
  :func:`breaks_schema`) or the handler's message type (``invalid``, :func:`invalid`);
* what the handler published is larger than the broker accepts (``too_large``): the same
  handler would publish the same records again;
* the record itself is larger than the transport's ``max_record_bytes`` (``too_large``,
  :func:`too_large_to_read`; another producer with a larger limit wrote it): it is not
  decoded, and its dead letter keeps the headers but not the value, which would not fit;
* the handler raised an error its :class:`RetryPolicy` calls non-recoverable
  (``non_recoverable``);

and after the last attempt, when the handler failed every attempt its policy allows
(``retries_exhausted``).

**Retry the handler**: any other error raised in the unit of work, after the delay its
:class:`RetryPolicy` gives, each attempt in a fresh unit of work.

**Back off a conflict**: :class:`ConcurrencyConflict` means another unit of work changed
the same rows first (or handled this very event). That is contention, not the handler
failing: the unit of work runs again after a jittered delay that doubles with each conflict
in a row, capped at ``CONFLICT_BACKOFF.max_delay``. It never counts as an attempt, never
dead-letters the event and never stops the service; a run of :data:`CONFLICT_STORM`
conflicts or more is a storm and is logged (:func:`is_storm`).

**Wait out the infrastructure**: :data:`INFRASTRUCTURE_ERRORS` (the broker, the database
or the schema registry is down) are nobody's fault in the handler. The error goes up to the consume loop: the
partitions not yet handled are rewound, and the loop waits (:func:`outage_delay`, growing
and capped) before it fetches again. Never an attempt, never a dead letter.

Whatever the action, nothing is acked before it is done, so a crash at any step leads to
redelivery, which the inbox makes harmless. Delays are returned, never slept here: the
runtime sleeps through its injected clock, so unit tests see every one of them.
"""

from __future__ import annotations

import dataclasses
import enum
import random

import pydantic

from tidings import codec
from tidings.formats import SchemaUnavailable, SchemaViolation
from tidings.reliability.deadletter import DeadLetterKind, DeadLetterReason
from tidings.reliability.retry import RetryPolicy
from tidings.store.base import ConcurrencyConflict, StoreUnavailable
from tidings.transport.base import RecordTooLarge, TransportError

# Errors of the broker, the database or the schema registry, not of a handler: they are
# waited out, never retried against the handler's policy or dead-lettered.
INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    TransportError,
    StoreUnavailable,
    SchemaUnavailable,
)
# Conflict n in a row waits min(max_delay, 2 ms * 2**(n-1)), less up to half at random.
CONFLICT_BACKOFF = RetryPolicy(initial_delay=0.002, multiplier=2.0, max_delay=1.0, jitter=0.5)
CONFLICT_STORM = 10  # conflicts in a row on one event that make a storm worth a log line
# Outage n in a row (broker or database down) waits min(5 s, 100 ms * 2**(n-1)), jittered.
OUTAGE_BACKOFF = RetryPolicy(initial_delay=0.1, multiplier=2.0, max_delay=5.0, jitter=0.5)


class Action(enum.Enum):
    RETRY = "retry"  # run the handler again after ``delay``; counts as an attempt
    BACK_OFF = "back_off"  # run the unit of work again after ``delay``; not an attempt
    WAIT_OUT = "wait_out"  # re-raise: the consume loop rewinds and waits the outage out
    DEAD_LETTER = "dead_letter"  # publish to the group's dead letters with ``reason``


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: DeadLetterReason | None = None


def too_large_to_read(size: int, limit: int) -> DeadLetterReason:
    return DeadLetterReason(
        DeadLetterKind.TOO_LARGE,
        f"record of {size} bytes is over this transport's max_record_bytes={limit}; not"
        " decoded, its value is not kept in the dead letter",
    )


def undecodable(error: codec.DecodeError) -> DeadLetterReason:
    return DeadLetterReason(DeadLetterKind.UNDECODABLE, f"undecodable: {error}")


def invalid(
    event_type: str, error: pydantic.ValidationError, written: int | None = None, read: int = 1
) -> DeadLetterReason:
    """Data that does not fit the handler's type; the versions are named if they differ."""
    parts = []
    for err in error.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    versions = f" (written as v{written}, read as v{read})" if written not in (None, read) else ""
    return DeadLetterReason(
        DeadLetterKind.INVALID, f"invalid {event_type}{versions}: {'; '.join(parts)}"
    )


def unknown_schema(schema_id: int, registry: str) -> DeadLetterReason:
    """A record written with a schema id the registry answers "not found" for."""
    return DeadLetterReason(
        DeadLetterKind.UNDECODABLE,
        f"undecodable: schema id {schema_id} is not known to the registry {registry}",
    )


def breaks_schema(error: SchemaViolation) -> DeadLetterReason:
    """Data that breaks the schema it names at the registry; ``error`` names type and field."""
    return DeadLetterReason(DeadLetterKind.INVALID, str(error))


def not_upcast(error: Exception) -> DeadLetterReason:
    """An old version with no way to the version the handler reads (see tidings.upcasting)."""
    return DeadLetterReason(DeadLetterKind.INVALID, str(error))


def after_failure(
    error: Exception,
    *,
    handler: str,
    retry: RetryPolicy,
    attempt: int,
    conflicts: int,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after attempt ``attempt`` of ``handler`` raised ``error``.

    ``conflicts`` is how many conflicts in a row came before this error (0 for the first).
    """
    if isinstance(error, ConcurrencyConflict):
        return Decision(Action.BACK_OFF, conflict_delay(conflicts + 1, rng))
    if isinstance(error, RecordTooLarge):  # a TransportError, but no outage: check it first
        return _dead(DeadLetterKind.TOO_LARGE, f"{handler}: {error}")
    if isinstance(error, INFRASTRUCTURE_ERRORS):
        return Decision(Action.WAIT_OUT)
    if isinstance(error, retry.non_recoverable):
        return _dead(DeadLetterKind.NON_RECOVERABLE, f"{handler} raised a non-recoverable error")
    if not retry.should_retry(error, attempt):
        return _dead(
            DeadLetterKind.RETRIES_EXHAUSTED, f"{handler} failed after {attempt} attempt(s)"
        )
    return Decision(Action.RETRY, retry.delay(attempt, rng))


def conflict_delay(conflicts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``conflicts``-th conflict in a row (1-based)."""
    return CONFLICT_BACKOFF.delay(min(conflicts, 64), rng)


def is_storm(conflicts: int) -> bool:
    """Should this many conflicts in a row be logged as a storm? At :data:`CONFLICT_STORM`,
    then at every multiple of ten times that: a long storm logs now and then, not each time."""
    return conflicts == CONFLICT_STORM or (
        conflicts > CONFLICT_STORM and conflicts % (10 * CONFLICT_STORM) == 0
    )


def outage_delay(outages: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``outages``-th failure in a row of the broker or database."""
    return OUTAGE_BACKOFF.delay(min(outages, 64), rng)


def _dead(kind: DeadLetterKind, detail: str) -> Decision:
    return Decision(Action.DEAD_LETTER, reason=DeadLetterReason(kind, detail))
