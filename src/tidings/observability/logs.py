"""Logs: one logging setup for every tidings process, with the event in hand on each line.

:func:`setup_logging` installs one handler on the root logger, writing either JSON lines
(``TIDINGS_LOG_FORMAT=json``, for log shippers) or text (the default, for people). While
a handler runs, :func:`bind_event` puts the event in a context variable, and every line
written in that time, by the framework, by business code or by a library, carries the
service, event type, event id, correlation id and causation id (and, when tracing is on,
the trace and span ids, so a log line leads to its trace and back).

Business code logs with the standard library (``logging.getLogger(__name__)``) and gets
all of this without importing anything from here.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Any, Literal, NamedTuple, TextIO

from tidings.credentials import redact
from tidings.envelope import Envelope

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
# Attributes every LogRecord has; anything else passed as ``extra=`` is logged as a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class EventContext(NamedTuple):
    """The event a handler is working on, as log lines show it (a tuple: made per event)."""

    service: str
    event_type: str
    event_id: str
    correlation_id: str | None
    causation_id: str | None


_current: contextvars.ContextVar[EventContext | None] = contextvars.ContextVar(
    "tidings_event", default=None
)


def bind_event(service: str, envelope: Envelope) -> contextvars.Token[EventContext | None]:
    """Make ``envelope`` the event of every log line until :func:`unbind_event`."""
    return _current.set(
        EventContext(
            service,
            envelope.type,
            envelope.id,
            envelope.correlationid or envelope.id,
            envelope.causationid,
        )
    )


def unbind_event(token: contextvars.Token[EventContext | None]) -> None:
    _current.reset(token)


def current_event() -> EventContext | None:
    return _current.get()


class EventContextFilter(logging.Filter):
    """Copies the process's service and the bound event onto each record.

    A filter on the handler, not a logger, so it sees records of every logger, and runs
    in the thread (and asyncio task) that logged, where the context variable is right.
    """

    def __init__(self, service: str | None, with_trace_ids: bool) -> None:
        super().__init__()
        self.service = service
        self.with_trace_ids = with_trace_ids

    def filter(self, record: logging.LogRecord) -> bool:
        event = _current.get()
        if event is not None:
            record.service = event.service
            record.event_type = event.event_type
            record.event_id = event.event_id
            record.correlation_id = event.correlation_id
            record.causation_id = event.causation_id
        elif self.service is not None and not hasattr(record, "service"):
            record.service = self.service
        if self.with_trace_ids and not hasattr(record, "trace_id"):
            from opentelemetry import trace

            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = f"{context.trace_id:032x}"
                record.span_id = f"{context.span_id:016x}"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # Every line is redacted whole: a secret may hide in the message, a field or a
        # traceback (tidings.credentials).
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``time level logger [service type id=… corr=…] message`` for reading in a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(context)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        service = getattr(record, "service", None)
        if service:
            parts.append(str(service))
        event_type = getattr(record, "event_type", None)
        if event_type:
            event_id, correlation = (
                getattr(record, "event_id", ""),
                getattr(record, "correlation_id", ""),
            )
            parts.append(f"{event_type} id={event_id} corr={correlation}")
        record.context = f"[{' '.join(parts)}] " if parts else ""
        return redact(super().format(record))


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


_HANDLER_NAME = "tidings"


def setup_logging(
    format: str | None = None,
    level: str | int | None = None,
    *,
    service: str | None = None,
    with_trace_ids: bool = False,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger for this process; calling it again replaces the setup.

    ``format`` defaults to ``TIDINGS_LOG_FORMAT`` (``text`` or ``json``, default text),
    ``level`` to ``TIDINGS_LOG_LEVEL`` (default WARNING). ``service`` names the process
    on lines written outside any handler.
    """
    chosen = (format or os.environ.get("TIDINGS_LOG_FORMAT") or "text").lower()
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: use one of {', '.join(FORMATS)}")
    chosen_level = level or os.environ.get("TIDINGS_LOG_LEVEL") or "WARNING"
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(EventContextFilter(service, with_trace_ids))
    root.addHandler(handler)
    root.setLevel(chosen_level.upper() if isinstance(chosen_level, str) else chosen_level)
    return handler


__all__ = [
    "FORMATS",
    "EventContext",
    "EventContextFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "bind_event",
    "current_event",
    "setup_logging",
    "unbind_event",
]
