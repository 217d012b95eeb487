"""Tracing: OpenTelemetry spans that follow one request through every service.

Spans follow the OpenTelemetry messaging semantic conventions:

* ``create <topic>`` (kind PRODUCER) for each message a unit of work publishes: started
  in ``Context.publish``, as a child of what is running (the HTTP request's span, or the
  consumer span of the event being handled). Its context becomes the envelope's W3C
  ``traceparent``. (``create``, not ``send``: the outbox relay sends later, in batches.)
* ``process <topic>`` (kind CONSUMER) around each handling of an event, with the
  ``traceparent`` it carries as parent: so a chain of events is one trace, across
  processes, whatever broker carried it. Retries are span events; a dead letter sets the
  span's status to ERROR with the reason (and its kind as an attribute).

HTTP requests get a SERVER span from the OpenTelemetry ASGI/FastAPI instrumentation,
which :meth:`Tracing.wrap_http_app` adds, so ``POST /orders`` is the root of its order's
trace.

Exporters are chosen by a spec (``otlp``, ``otlp:URL``, ``console``, ``file:PATH``,
``off``; see :mod:`.export`, which also says how spans leave the process). Sampling
follows the SDK's ``OTEL_TRACES_SAMPLER`` for a trace's root, and the parent's decision
otherwise. The two per-event spans are made by :mod:`.spans`, cheaply.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from tidings.credentials import redact
from tidings.envelope import Envelope
from tidings.observability.export import LoopBatchProcessor, flush_interval
from tidings.observability.spans import CurrentSpan, SpanRecorder
from tidings.records import Record
from tidings.reliability.deadletter import DeadLetterReason

_TRACEPARENT_VERSION = "00"
_FLAGS = {"00": TraceFlags(TraceFlags.DEFAULT), "01": TraceFlags(TraceFlags.SAMPLED)}


def traceparent_of(context: SpanContext) -> str:
    """The W3C ``traceparent`` header of a span context."""
    # A % format: a third faster than the f-string, and this runs per event.
    ids = (context.trace_id, context.span_id, context.trace_flags)
    return "00-%032x-%016x-%02x" % ids  # noqa: UP031


def span_context_from_traceparent(traceparent: str | None) -> SpanContext | None:
    """The (remote) span context a W3C ``traceparent`` names; None if absent or malformed.

    Parsed here rather than through the propagator API: it is on the hot path and the
    format is fixed (version-traceid-spanid-flags, lower-case hex), so it is sliced, not
    matched with the propagator's regular expression.
    """
    if (
        not traceparent
        or len(traceparent) != 55
        or not traceparent.startswith("00-")
        or traceparent[35] != "-"
        or traceparent[52] != "-"
    ):
        return None
    flags = traceparent[53:]
    try:
        context = SpanContext(
            int(traceparent[3:35], 16),
            int(traceparent[36:52], 16),
            is_remote=True,
            trace_flags=_FLAGS.get(flags) or TraceFlags(int(flags, 16)),
        )
    except ValueError:
        return None
    return context if context.is_valid else None


class Tracing:
    """The spans of one service process. Build with :func:`tidings.observability.configure`."""

    def __init__(
        self,
        service: str,
        processor: SpanProcessor,
        *,
        system: str = "tidings",
        resource_attributes: dict[str, Any] | None = None,
    ) -> None:
        attributes: dict[str, Any] = {
            "service.name": service,
            "service.instance.id": f"{os.uname().nodename}:{os.getpid()}",
        }
        attributes.update(resource_attributes or {})
        self.provider = TracerProvider(resource=Resource.create(attributes))
        self.processor = processor
        self.provider.add_span_processor(processor)
        scope = InstrumentationScope("tidings", _version())
        self.recorder = SpanRecorder(self.provider, processor, scope)
        self.service = service
        self.system = system

    # -- consuming -----------------------------------------------------------------------
    def consume(self, group: str, envelope: Envelope, record: Record) -> CurrentSpan:
        """A CONSUMER span around one handling, child of the producer's ``traceparent``."""
        span = self.recorder.start(
            f"process {record.topic}",
            SpanKind.CONSUMER,
            span_context_from_traceparent(envelope.traceparent),
            {
                "messaging.system": self.system,
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.consumer.group.name": group,
                "messaging.message.id": envelope.id,
                "messaging.message.conversation_id": envelope.correlationid or envelope.id,
                "cloudevents.event_type": envelope.type,
                "cloudevents.event_subject": envelope.subject or "",
            },
        )
        return CurrentSpan(span)

    # -- producing -----------------------------------------------------------------------
    def produce(self, topic: str, envelope: Envelope) -> Envelope:
        """A PRODUCER span for one published message; returns the envelope carrying it.

        Its parent is what runs now: the consumer span of the event being handled, or the
        HTTP request's server span.
        """
        span = self.recorder.start(
            f"create {topic}",
            SpanKind.PRODUCER,
            trace.get_current_span().get_span_context(),
            {
                "messaging.system": self.system,
                "messaging.operation.name": "create",
                "messaging.operation.type": "create",
                "messaging.destination.name": topic,
                "messaging.message.id": envelope.id,
                "messaging.message.conversation_id": envelope.correlationid or envelope.id,
                "cloudevents.event_type": envelope.type,
                "cloudevents.event_subject": envelope.subject or "",
            },
        )
        span.end()
        return envelope.restamped(
            envelope.dataschema, traceparent_of(span.get_span_context()), envelope.schemaversion
        )

    # -- failures ------------------------------------------------------------------------
    @staticmethod
    def retrying(attempt: int, error: BaseException) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "retry",
                {
                    "tidings.attempt": attempt,
                    "exception.type": type(error).__name__,
                    "exception.message": redact(str(error))[:500],
                },
            )

    @staticmethod
    def dead_lettered(reason: DeadLetterReason, error: BaseException) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(error)
            span.set_attribute("tidings.dead_letter.kind", reason.kind.value)
            detail = redact(reason.detail)[:500]
            span.set_attribute("tidings.dead_letter.reason", detail)
            span.set_status(Status(StatusCode.ERROR, detail))

    # -- HTTP ----------------------------------------------------------------------------
    def wrap_http_app(self, app: Any) -> Any:
        """The app with a SERVER span per request (FastAPI: named by route template)."""
        try:
            from fastapi import FastAPI
        except ImportError:  # pragma: no cover - fastapi is a dependency
            FastAPI = None  # type: ignore[assignment,misc]
        if FastAPI is not None and isinstance(app, FastAPI):
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            FastAPIInstrumentor.instrument_app(
                app,
                tracer_provider=self.provider,
                excluded_urls="/health",
                exclude_spans=["receive", "send"],
            )
            return app
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            app, tracer_provider=self.provider, exclude_spans=["receive", "send"]
        )

    def flush(self) -> None:
        """Send the spans batched so far (called every ``OTEL_BSP_SCHEDULE_DELAY``)."""
        if isinstance(self.processor, LoopBatchProcessor):
            self.processor.flush()

    async def run(self) -> None:
        """Flush partial batches periodically, in the event loop, until cancelled."""
        interval = flush_interval()
        while True:
            await asyncio.sleep(interval)
            self.flush()

    def close(self) -> None:
        """Export what is buffered and stop the exporter."""
        self.provider.shutdown()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tidings")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
