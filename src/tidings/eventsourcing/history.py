"""An aggregate's audit trail: every event of its stream, and its state at a given time.

What ``tidings history account c01 [--at TIME]`` prints. The trail is always whole; the
state is the replay of the events recorded at or before ``at`` (all of them without it),
so it is what the service would have loaded at that moment. Events after ``at`` are still
listed, marked as later.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from tidings.eventsourcing.aggregate import Aggregate
from tidings.eventsourcing.repository import event_of, replay
from tidings.store.base import StoredEvent, UnitOfWork


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """The events of one aggregate's stream and its state at ``at`` (now if None)."""

    aggregate_type: type[Aggregate]
    id: str
    events: list[StoredEvent]
    at: datetime | None
    state: Aggregate | None  # None: it had no event yet at that time

    @property
    def stream(self) -> str:
        return self.aggregate_type.stream_id(self.id)

    def later(self, event: StoredEvent) -> bool:
        return self.at is not None and event.time > self.at

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "events": [
                {
                    "version": e.version,
                    "position": e.position,
                    "time": _iso(e.time),
                    "type": e.type,
                    "id": e.event_id,
                    "data": e.data,
                }
                for e in self.events
            ],
            "at": None if self.at is None else _iso(self.at),
            "version": 0 if self.state is None else self.state.version,
            "state": None if self.state is None else self.state.model_dump(mode="json"),
        }

    def render(self) -> list[str]:
        """The trail, one line per event, then the state as JSON."""
        lines = [f"{self.stream}: {len(self.events)} event(s)"]
        for e in self.events:
            shown = _without_id(self.aggregate_type, e, self.id)
            later = "  (after --at)" if self.later(e) else ""
            lines.append(
                f"  v{e.version:<4} {_iso(e.time)}  {e.type:<18} "
                f"{json.dumps(shown, ensure_ascii=False, sort_keys=True)}{later}"
            )
        when = "now" if self.at is None else _iso(self.at)
        if self.state is None:
            lines.append(f"state at {when}: none yet (no event recorded by then)")
        else:
            state = self.state.model_dump(mode="json")
            lines.append(f"state at {when} (version {self.state.version}):")
            lines.extend(
                "  " + line for line in json.dumps(state, indent=2, ensure_ascii=False).splitlines()
            )
        return lines


async def read_history(
    uow: UnitOfWork, aggregate_type: type[Aggregate], id: str, at: datetime | None = None
) -> History:
    """The whole stream of ``id`` and its state at ``at`` (an aware datetime) or now."""
    if at is not None and at.tzinfo is None:
        raise ValueError(f"--at {at.isoformat()}: give a time zone (such as Z or +01:00)")
    events = await uow.read_stream(aggregate_type.stream_id(id))
    upto = [e for e in events if at is None or e.time <= at]
    state = replay(aggregate_type, id, upto) if upto else None
    return History(aggregate_type, id, events, at, state)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _without_id(aggregate_type: type[Aggregate], stored: StoredEvent, id: str) -> dict[str, Any]:
    """The event's data without its key when that is the aggregate's id (said once above)."""
    key = event_of(aggregate_type, stored).message_info.key
    return {k: v for k, v in stored.data.items() if not (k == key and v == id)}
