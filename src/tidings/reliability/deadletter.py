"""Dead letters: where an event goes when it cannot be handled, with why and from where.

A dead letter is the original record (value, key and headers unchanged) published to the
consumer group's dead-letter topic ``<group>.dlq``, with ``dlq-*`` headers saying what
went wrong (reason, error, a short traceback, attempts) and where it came from (topic,
partition, offset). Replaying one publishes the original record to ``<group>.replay``,
a topic only that group reads, so other groups that already handled it see nothing.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Mapping

from tidings.transport.base import OutgoingRecord, Record

PREFIX = "dlq-"
TRACEBACK_LINES = 12


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
        return OutgoingRecord(
            replay_topic(self.group), self.record.value, self.record.key, self.original_headers
        )

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        h = record.headers
        return cls(
            record=record,
            group=h.get(PREFIX + "group", ""),
            reason=h.get(PREFIX + "reason", ""),
            error=h.get(PREFIX + "error", ""),
            traceback=h.get(PREFIX + "traceback", ""),
            attempts=int(h.get(PREFIX + "attempts", "0")),
            topic=h.get(PREFIX + "topic", ""),
            partition=int(h.get(PREFIX + "partition", "-1")),
            offset=int(h.get(PREFIX + "offset", "-1")),
            failed_at=float(h.get(PREFIX + "failed-at", "0")),
        )


def dead_letter(
    record: Record,
    group: str,
    reason: str,
    error: BaseException | None = None,
    attempts: int = 0,
) -> OutgoingRecord:
    """The dead-letter record for ``record``, which ``group`` could not handle."""
    headers: dict[str, str] = {k: v for k, v in record.headers.items() if not k.startswith(PREFIX)}
    if error is not None:
        tb = "".join(traceback.format_exception(error)).splitlines()[-TRACEBACK_LINES:]
        headers[PREFIX + "error"] = f"{type(error).__name__}: {error}"[:2000]
        headers[PREFIX + "traceback"] = "\n".join(tb)[:4000]
    headers.update(
        {
            PREFIX + "group": group,
            PREFIX + "reason": reason[:2000],
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
