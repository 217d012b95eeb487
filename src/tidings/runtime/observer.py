"""What a runtime reports: its counters (:class:`Stats`) and the :class:`Observer` hooks
that metrics, tracing and logs implement (:mod:`tidings.observability`)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from tidings.envelope import Envelope
from tidings.reliability.deadletter import DeadLetterReason
from tidings.store.base import OutboxEntry
from tidings.transport.base import Record

if TYPE_CHECKING:
    from tidings.runtime import Runtime

Outcome = Literal["handled", "duplicate", "skipped", "dead_lettered"]


@dataclasses.dataclass
class Stats:
    """Counters of one runtime (the metrics layer reads these too)."""

    consumed: int = 0
    handled: int = 0
    duplicates: int = 0
    skipped: int = 0
    retries: int = 0
    conflicts: int = 0  # units of work run again after a ConcurrencyConflict
    dead_lettered: int = 0
    published: int = 0

    def summary(self) -> str:
        """One line of the counters, for the log when a runtime stops."""
        return ", ".join(f"{f.name.replace('_', ' ')} {getattr(self, f.name)}" for f in dataclasses.fields(self))


class Observer:
    """Hooks for metrics, tracing and logs; the default does nothing.

    :mod:`tidings.observability` implements them. Hooks run on the hot path (once per
    event), so an implementation keeps them cheap and never raises.
    """

    def handling(
        self, service: str, envelope: Envelope, record: Record
    ) -> contextlib.AbstractContextManager[object]:
        """Wraps the handling of one event by a handler (all its attempts): a consumer span."""
        return NO_CONTEXT

    def publishing(self, service: str, topic: str, envelope: Envelope) -> Envelope:
        """The envelope ``Context.publish`` will write, e.g. with a producer span's traceparent."""
        return envelope

    def on_dead_lettered(
        self, service: str, record: Record, reason: DeadLetterReason, error: BaseException
    ) -> None:
        """An event went to the dead letters: ``reason.kind`` says why (never parse
        ``reason.detail``, the sentence for people)."""
        return None

    def wrap_http_app(self, app: Any) -> Any:
        """The service's HTTP app as served, e.g. behind tracing middleware."""
        return app

    async def run(self, runtime: Runtime) -> None:
        """Background work while ``runtime`` runs (e.g. sampling consumer lag)."""
        return None

    def close(self) -> None:
        """Flush and release what the observer holds (after the runtime stopped)."""
        return None

    def on_handled(
        self,
        service: str,
        envelope: Envelope | None,
        record: Record,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        return None

    def on_retry(
        self, service: str, envelope: Envelope, attempt: int, error: BaseException
    ) -> None:
        return None

    def on_published(self, service: str, entries: list[OutboxEntry]) -> None:
        return None


NO_CONTEXT = contextlib.nullcontext()
