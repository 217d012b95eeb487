"""Durable timers: "call me back at this time", kept in the service's store.

    key = await ctx.schedule("saga.order", "o1", after=30, data={"step": "charging"})
    await ctx.cancel_timer(key)

    @service.on_timer("saga.order")
    async def timed_out(timer: Timer, ctx: Context) -> None: ...

The rules (the loop that fires them is :mod:`tidings.runtime.timers`):

* A timer is a document of the collection ``_timers`` in the service's own state,
  written in the unit of work that schedules it: it exists if and only if what armed it
  committed, and it survives restarts like any other state.
* Its key starts with its due time (UTC, fixed width), so listing the collection in key
  order lists timers in due order: the firing loop reads the first page and stops at the
  first one not due, with no index or table of its own (the store contract is unchanged).
* Firing deletes the document and runs the handler in ONE unit of work. A crash before
  the commit leaves it due: it fires again after the restart (at least once). Two members
  of a group may fire the same timer at once; a handler must therefore be harmless when
  run twice (a saga checks that the timer is still the one it armed, and its state is
  written with an expected version, so one of two firings commits and the other finds
  nothing left to do).
* Publishing from a timer handler keeps the correlation of the work that armed it: the
  timer stores that correlation id and the id of the event being handled when it was
  armed, and fires with a cause envelope (type ``tidings.TimerFired``) carrying them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from tidings.envelope import Envelope, new_event_id, utc_now
from tidings.state import Collection

TIMER_FIRED = "tidings.TimerFired"
_DUE_FORMAT = "%Y%m%dT%H%M%S.%fZ"


class Timer(BaseModel):
    """One armed timer: what fires (``kind``: the handler), about what (``name``), when."""

    key: str
    kind: str
    name: str
    due: datetime
    data: dict[str, Any] = {}
    correlation_id: str | None = None
    cause_id: str | None = None

    def cause(self, source: str) -> Envelope:
        """The envelope a firing handles: publishing from it keeps the armer's correlation."""
        return Envelope(
            id=new_event_id(),
            source=source,
            type=TIMER_FIRED,
            subject=self.name,
            data={"timer": self.key, "kind": self.kind, **self.data},
            correlationid=self.correlation_id or self.cause_id,
            causationid=self.cause_id,
        )


TIMERS: Collection[Timer] = Collection("_timers", Timer)


def timer_key(due: datetime, kind: str, name: str) -> str:
    """``<due, UTC, fixed width> <kind> <name> <unique>``: key order is due order."""
    if due.tzinfo is None:
        raise ValueError(f"a timer's due time must be aware (UTC), not {due!r}")
    stamp = due.astimezone(UTC).strftime(_DUE_FORMAT)
    return f"{stamp} {kind} {name} {new_event_id()}"


def due_of(key: str) -> datetime:
    """The due time a key starts with."""
    return datetime.strptime(key.split(" ", 1)[0], _DUE_FORMAT).replace(tzinfo=UTC)


def new_timer(
    kind: str,
    name: str,
    *,
    at: datetime | None = None,
    after: float | None = None,
    data: dict[str, Any] | None = None,
    cause: Envelope | None = None,
    now: datetime | None = None,
) -> Timer:
    """A timer due ``at`` a time or ``after`` seconds from ``now`` (exactly one of them)."""
    if (at is None) == (after is None):
        raise ValueError(f"timer {kind} {name}: give exactly one of at= or after=")
    if after is not None and after < 0:
        raise ValueError(f"timer {kind} {name}: after={after} must not be negative")
    due = at if at is not None else (now or utc_now()) + timedelta(seconds=after or 0.0)
    return Timer(
        key=timer_key(due, kind, name),
        kind=kind,
        name=name,
        due=due,
        data=data or {},
        correlation_id=None if cause is None else cause.correlationid or cause.id,
        cause_id=None if cause is None else cause.id,
    )
