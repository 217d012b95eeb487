"""Lean spans: the per-event spans, recorded without the SDK tracer's per-span overhead.

The OpenTelemetry SDK's ``Tracer.start_span`` validates every attribute under a lock,
copies the span into a ``ReadableSpan`` when it ends and runs the sampler; measured here,
that is about 30 us per span, several times what the rest of handling an event through
the embedded log costs per span. The consumer and producer spans of the runtime are made
by the same rules with less work: ids from the provider's id generator, sampling as the
provider's sampler decides for a root and as the parent decided otherwise (ParentBased,
the SDK's default), attributes the framework builds itself (known-good types). A lean
span is both an API ``Span`` (a handler can ``trace.get_current_span().set_attribute(...)``)
and the SDK's ``ReadableSpan``: once ended it refuses changes, so it is handed to the
provider's span processor as it is, not copied (as the SDK's own ``Span`` does). Export,
batching, resources and exporters are the SDK's own, unchanged; other spans (the HTTP
server span, spans a handler starts through the API) go through the SDK tracer as usual.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import Attributes, AttributeValue

from tidings.credentials import redact

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


class LeanSpan(Span, ReadableSpan):
    """A recording span; ended, it is the ``ReadableSpan`` the span processor gets."""

    _attributes: dict[str, AttributeValue]  # ReadableSpan's fields, narrowed
    _context: SpanContext

    def __init__(
        self,
        recorder: SpanRecorder,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
    ) -> None:
        # ReadableSpan's fields, set here rather than by its __init__ (a third of the cost).
        self._recorder = recorder
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._events: list[Event] = []
        self._links = ()
        self._status = _UNSET
        self._resource = recorder.resource
        self._instrumentation_scope = recorder.scope
        self._instrumentation_info = None
        self._start_time = time.time_ns()
        self._end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        return None  # links are not needed by the framework's spans

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.description:  # a trace attribute like any other: never a secret
            status = Status(status.status_code, redact(status.description))
        if self._end_time is None and self._status.status_code is not StatusCode.OK:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        event: dict[str, AttributeValue] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": redact(str(exception)),
            "exception.stacktrace": redact("".join(traceback.format_exception(exception))),
            "exception.escaped": str(escaped),
        }
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        self._recorder.processor.on_end(self)

    def fields(self) -> tuple[Any, ...]:
        """What an encoder needs, in one call rather than ten property reads: context,
        parent, name, kind, start and end time, attributes, status, events and links."""
        return (
            self._context,
            self._parent,
            self._name,
            self._kind,
            self._start_time,
            self._end_time,
            self._attributes,
            self._status,
            self._events,
            self._links,
        )

    def __enter__(self) -> LeanSpan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(error, Exception):
            self.record_exception(error, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.end()


class SpanRecorder:
    """Starts lean spans for one tracer provider and hands them to its span processor."""

    def __init__(
        self, provider: TracerProvider, processor: SpanProcessor, scope: InstrumentationScope
    ) -> None:
        self.provider = provider
        self.processor = processor
        self.scope = scope
        self.resource = provider.resource
        self.ids = provider.id_generator

    def start(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        attributes: dict[str, AttributeValue],
    ) -> Span:
        """A started span under ``parent`` (None: a root, sampled by the provider's sampler).

        Unsampled spans are non-recording (their context still propagates, flags 00).
        """
        if parent is not None and parent.is_valid:
            trace_id, flags = parent.trace_id, parent.trace_flags
        else:
            parent = None
            trace_id = self.ids.generate_trace_id()
            decision = self.provider.sampler.should_sample(
                None, trace_id, name, kind, attributes
            ).decision
            sampled = decision is Decision.RECORD_AND_SAMPLE
            flags = SAMPLED if sampled else NOT_SAMPLED
        context = SpanContext(
            trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=flags
        )
        if not flags.sampled:
            return NonRecordingSpan(context)
        return LeanSpan(self, name, context, parent, kind, attributes)


class CurrentSpan:
    """Makes a span current (for log lines and child spans) while a handler runs; ends it."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.token: object = None

    def __enter__(self) -> Span:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self.token)  # type: ignore[arg-type]
        if isinstance(error, Exception) and self.span.is_recording():
            self.span.record_exception(error, escaped=True)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.span.end()


__all__ = ["CurrentSpan", "LeanSpan", "SpanRecorder"]
