"""Telemetry: the runtime's :class:`~tidings.runtime.Observer`, made of tracing, metrics, logs.

:func:`configure` builds it from options or the environment, which is what ``tidings run``
does for every service process:

==========================  ====================================  ==================
option                      environment                           default
==========================  ====================================  ==================
``--traces SPEC``           ``TIDINGS_TRACES``                    ``off``
``--metrics-port PORT``     ``TIDINGS_METRICS_PORT``              off (0: any port)
``--metrics-host HOST``     ``TIDINGS_METRICS_HOST``              ``127.0.0.1``
(none)                      ``TIDINGS_METRICS_INTERVAL``          ``5`` (seconds)
``--log-format FORMAT``     ``TIDINGS_LOG_FORMAT``                ``text``
==========================  ====================================  ==================

Defaults are cheap: no spans and no metrics server unless asked for. The log context
(event ids on log lines) is always on: it costs a context variable per event.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tidings.envelope import Envelope
from tidings.observability import logs
from tidings.records import Record
from tidings.reliability.deadletter import DeadLetterReason
from tidings.runtime import Observer, Outcome, Runtime
from tidings.store.base import OutboxEntry

if TYPE_CHECKING:
    from tidings.observability.metrics import Metrics
    from tidings.observability.spans import CurrentSpan
    from tidings.observability.tracing import Tracing

log = logging.getLogger("tidings.observability")


@dataclasses.dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """What to observe in one process, and where to send it."""

    traces: str = "off"
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_interval: float = 5.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TelemetryConfig:
        env = dict(os.environ) if env is None else env
        port = env.get("TIDINGS_METRICS_PORT", "").strip()
        if port and not port.isdigit():
            raise ValueError(f"TIDINGS_METRICS_PORT={port!r}: expected a port number")
        return cls(
            traces=env.get("TIDINGS_TRACES", "off") or "off",
            metrics_port=int(port) if port else None,
            metrics_host=env.get("TIDINGS_METRICS_HOST", "127.0.0.1") or "127.0.0.1",
            metrics_interval=float(env.get("TIDINGS_METRICS_INTERVAL", "5") or 5),
        )


class HandlingScope:
    """While a handler runs: the event on every log line, and the consumer span current."""

    __slots__ = ("envelope", "service", "span", "token")

    def __init__(self, service: str, envelope: Envelope, span: CurrentSpan | None) -> None:
        self.service = service
        self.envelope = envelope
        self.span = span
        self.token: contextvars.Token[logs.EventContext | None] | None = None

    def __enter__(self) -> None:
        self.token = logs.bind_event(self.service, self.envelope)
        if self.span is not None:
            self.span.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.span is not None:
                self.span.__exit__(kind, error, tb)
        finally:
            if self.token is not None:
                logs.unbind_event(self.token)


class Telemetry(Observer):
    """Tracing (optional), metrics (optional) and log context for one service process."""

    def __init__(
        self,
        tracing: Tracing | None = None,
        metrics: Metrics | None = None,
        *,
        metrics_interval: float = 5.0,
    ) -> None:
        self.tracing = tracing
        self.metrics = metrics
        self.metrics_interval = metrics_interval

    # -- hot path ------------------------------------------------------------------------
    def handling(self, service: str, envelope: Envelope, record: Record) -> HandlingScope:
        scope = None if self.tracing is None else self.tracing.consume(service, envelope, record)
        return HandlingScope(service, envelope, scope)

    def publishing(self, service: str, topic: str, envelope: Envelope) -> Envelope:
        if self.tracing is None:
            return envelope
        return self.tracing.produce(topic, envelope)

    def on_handled(
        self,
        service: str,
        envelope: Envelope | None,
        record: Record,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        if self.metrics is not None:
            self.metrics.handled(service, envelope, record, outcome, seconds)

    def on_retry(
        self, service: str, envelope: Envelope, attempt: int, error: BaseException
    ) -> None:
        if self.metrics is not None:
            self.metrics.retried(service, envelope, error)
        if self.tracing is not None:
            self.tracing.retrying(attempt, error)

    def on_dead_lettered(
        self, service: str, record: Record, reason: DeadLetterReason, error: BaseException
    ) -> None:
        if self.metrics is not None:
            self.metrics.dead_lettered(service, record, reason)
        if self.tracing is not None:
            self.tracing.dead_lettered(reason, error)

    def on_published(self, service: str, entries: list[OutboxEntry]) -> None:
        if self.metrics is not None:
            self.metrics.published_entries(service, entries)

    # -- lifecycle -----------------------------------------------------------------------
    def wrap_http_app(self, app: Any) -> Any:
        return app if self.tracing is None else self.tracing.wrap_http_app(app)

    async def run(self, runtime: Runtime) -> None:
        work = []
        if self.metrics is not None:
            work.append(self.metrics.run(runtime, self.metrics_interval))
        if self.tracing is not None:
            work.append(self.tracing.run())
        await asyncio.gather(*work)

    def close(self) -> None:
        if self.tracing is not None:
            self.tracing.close()
        if self.metrics is not None:
            self.metrics.close()


def broker_system(broker_url: str) -> str:
    """``messaging.system`` for a broker URL (the semantic conventions' well-known names)."""
    scheme = broker_url.partition(":")[0].lower()
    return {"kafka": "kafka", "nats": "nats"}.get(scheme, "tidings")


def configure(
    service: str, config: TelemetryConfig | None = None, *, broker_url: str = ""
) -> Telemetry:
    """Build the telemetry of one service process and start its metrics endpoint.

    Raises ``ValueError`` for a bad trace spec and ``OSError`` if the metrics port is taken.
    """
    config = config or TelemetryConfig.from_env()
    tracing = None
    if config.traces.strip().lower() not in ("", "off", "none"):
        from tidings.observability.export import make_processor
        from tidings.observability.tracing import Tracing

        processor = make_processor(config.traces, service)
        if processor is not None:
            tracing = Tracing(service, processor, system=broker_system(broker_url))
    metrics = None
    if config.metrics_port is not None:
        from tidings.observability.metrics import Metrics

        metrics = Metrics()
        port = metrics.serve(config.metrics_port, config.metrics_host)
        log.info("service %s: metrics on http://%s:%d/metrics", service, config.metrics_host, port)
    return Telemetry(tracing, metrics, metrics_interval=config.metrics_interval)
