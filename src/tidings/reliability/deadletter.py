"""Dead letters: where an event goes when it cannot be handled, with why and from where.

A dead letter is the original record (value, key and headers unchanged) published to the
consumer group's dead-letter topic ``<group>.dlq``, with ``dlq-*`` headers saying what
went wrong (the kind of failure, a human-readable reason, the error, a short traceback,
attempts) and where it came from (topic, partition, offset). Replaying one publishes the
original record to ``<group>.replay``, a topic only that group reads, so other groups that
already handled it see nothing.

The kind (:class:`DeadLetterKind`, header ``dlq-kind``) is what programs count and filter
by; the reason is for people and is never parsed. Letters written before the kind existed
have no ``dlq-kind`` header and read back with ``kind=None``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
import traceback
from collections.abc import Mapping

from tidings.credentials import redact
from tidings.transport.base import OutgoingRecord, Record, Transport
from tidings.transport.tools import read_topic

PREFIX = "dlq-"
TRACEBACK_LINES = 12


class DeadLetterKind(enum.StrEnum):
    """Why an event was given up on: a bounded set, fit for a metric label or a filter."""

    UNDECODABLE = "undecodable"  # not a CloudEvent this codec can read
    INVALID = "invalid"  # a CloudEvent whose data does not fit the handler's message type
    RETRIES_EXHAUSTED = "retries_exhausted"  # the handler failed every attempt its policy allows
    NON_RECOVERABLE = "non_recoverable"  # the handler raised an error no retry can fix
    TOO_LARGE = "too_large"  # what the handler published can never fit the broker's limit


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterReason:
    """Why one event is dead-lettered: its kind, and a sentence for people (``detail``).

    ``str()`` gives the detail, which is what the ``dlq-reason`` header holds.
    """

    kind: DeadLetterKind
    detail: str

    def __str__(self) -> str:
        return self.detail


REPLAYED_FROM = "replayed-from"  # header of a replayed record: the topic it first came on


def dlq_topic(group: str) -> str:
    return f"{group}.dlq"


def replay_topic(group: str) -> str:
    return f"{group}.replay"


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter as read back from the dead-letter topic."""

    record: Record  # the dead letter itself (on the .dlq topic)
    group: str
    reason: str
    kind: DeadLetterKind | None  # None: written before letters carried their kind
    error: str
    traceback: str
    attempts: int
    topic: str
    partition: int
    offset: int
    failed_at: float

    @property
    def original_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.record.headers.items() if not k.startswith(PREFIX)}

    @property
    def event_id(self) -> str | None:
        return self.record.headers.get("ce_id")

    @property
    def event_type(self) -> str | None:
        return self.record.headers.get("ce_type")

    def replay_record(self) -> OutgoingRecord:
        """The event as first received, onto the group's replay topic; its first topic in
        ``replayed-from``, so a record of a foreign topic (``Service.foreign``) is read
        with that topic's decoder again."""
        headers = {**self.original_headers, REPLAYED_FROM: self.topic}
        return OutgoingRecord(replay_topic(self.group), self.record.value, self.record.key, headers)

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        h = record.headers
        return cls(
            record=record,
            group=h.get(PREFIX + "group", ""),
            reason=h.get(PREFIX + "reason", ""),
            kind=_kind(h.get(PREFIX + "kind")),
            error=h.get(PREFIX + "error", ""),
            traceback=h.get(PREFIX + "traceback", ""),
            attempts=int(_number(h.get(PREFIX + "attempts"), 0)),
            topic=h.get(PREFIX + "topic", ""),
            partition=int(_number(h.get(PREFIX + "partition"), -1)),
            offset=int(_number(h.get(PREFIX + "offset"), -1)),
            failed_at=_number(h.get(PREFIX + "failed-at"), 0.0),
        )


def _number(value: str | None, default: float) -> float:
    """A number header; ``default`` when absent or not a number (a record another
    producer put on a dead-letter topic must not stop the tools that list them)."""
    try:
        number = default if value is None else float(value)
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def _kind(value: str | None) -> DeadLetterKind | None:
    """The kind a ``dlq-kind`` header names; None when absent or written by a newer version."""
    try:
        return None if value is None else DeadLetterKind(value)
    except ValueError:
        return None


def dead_letter(
    record: Record,
    group: str,
    reason: DeadLetterReason,
    error: BaseException | None = None,
    attempts: int = 0,
) -> OutgoingRecord:
    """The dead-letter record for ``record``, which ``group`` could not handle."""
    headers: dict[str, str] = {k: v for k, v in record.headers.items() if not k.startswith(PREFIX)}
    if error is not None:
        tb = "".join(traceback.format_exception(error)).splitlines()[-TRACEBACK_LINES:]
        # Redacted: an error may quote a URL with its password, and dead letters are kept
        # on the broker and shown by the dashboard and `tidings dlq show`.
        headers[PREFIX + "error"] = redact(f"{type(error).__name__}: {error}")[:2000]
        headers[PREFIX + "traceback"] = redact("\n".join(tb))[:4000]
    headers.update(
        {
            PREFIX + "group": group,
            PREFIX + "kind": reason.kind.value,
            PREFIX + "reason": redact(reason.detail)[:2000],
            PREFIX + "attempts": str(attempts),
            PREFIX + "topic": record.topic,
            PREFIX + "partition": str(record.partition),
            PREFIX + "offset": str(record.offset),
            PREFIX + "failed-at": f"{time.time():.3f}",
        }
    )
    return OutgoingRecord(dlq_topic(group), record.value, record.key, headers)


def is_dead_letter(headers: Mapping[str, str]) -> bool:
    return PREFIX + "reason" in headers


async def read_dead_letters(
    transport: Transport, group: str, since: float | None = None
) -> list[DeadLetter]:
    """The dead letters of consumer group ``group`` stored since ``since`` (seconds since
    the epoch; None: all the broker keeps), oldest first."""
    topic = dlq_topic(group)
    letters = [DeadLetter.from_record(r) async for r in read_topic(transport, topic, since=since)]
    return sorted(letters, key=lambda letter: letter.failed_at)
