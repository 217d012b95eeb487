"""Span export: exporters by spec, and a batch processor that keeps the GIL convoy away.

The SDK's ``BatchSpanProcessor`` encodes and sends a batch in a background thread. In a
service whose event loop is busy, that thread and the loop share the GIL: every SQLite
call of the loop releases it and, on return, waits behind the export thread for up to a
switch interval (the "convoy effect"). Measured on the shop, that waiting cost more than
the encoding itself. :class:`LoopBatchProcessor` splits the two: each span is encoded as it
ends (in the event loop's thread, a few microseconds), the pieces are joined into one
payload per batch, and only the bytes go to a background thread, whose work (a file
write, an HTTP request) releases the GIL while it waits. Encoding at the end, rather than
holding up to a batch of span objects until the batch is full, also keeps the spans out
of the garbage collector's older generations: they die young, and only strings wait.

Specs (``tidings run --traces`` or ``TIDINGS_TRACES``): ``otlp`` (OTLP/HTTP, JSON encoding,
see :mod:`.otlp`; endpoint and headers from the standard ``OTEL_EXPORTER_OTLP_*``
variables, default ``http://localhost:4318``), ``otlp:URL``, ``otlp-proto`` and
``otlp-proto:URL`` (the SDK's protobuf exporter, slower), ``console``, ``file:PATH`` (JSON
lines, in the SDK's JSON form of a span; ``{service}`` and ``{pid}`` in PATH are filled
in) or ``off``.
Batches hold up to ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` spans (512) and are flushed every
``OTEL_BSP_SCHEDULE_DELAY`` milliseconds (1000) by the observer's background task.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

log = logging.getLogger("tidings.tracing")
SPECS = "otlp, otlp:URL, otlp-proto, otlp-proto:URL, console, file:PATH or off"


class TracingConfigError(ValueError):
    """A ``--traces`` spec that names no exporter."""


def batch_size() -> int:
    return int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512)


def flush_interval() -> float:
    """Seconds between flushes of a partial batch."""
    return int(os.environ.get("OTEL_BSP_SCHEDULE_DELAY") or 1000) / 1000


def make_processor(spec: str, service: str) -> SpanProcessor | None:
    """The span processor (with its exporter) a spec names, or None for ``off``."""
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("", "off", "none"):
        return None
    if kind == "console":  # for a look while developing; cost does not matter there
        return BatchSpanProcessor(ConsoleSpanExporter(service_name=service))
    if kind == "file":
        if not arg:
            raise TracingConfigError(
                "--traces file:PATH needs a path, e.g. file:spans-{service}.jsonl"
            )
        path = arg.replace("{service}", service).replace("{pid}", str(os.getpid()))
        writer = JsonLinesWriter(path)
        return LoopBatchProcessor(JsonLinesEncoder().line, "".join, writer.write, writer.close)
    if kind == "otlp":
        from tidings.observability.otlp import OtlpHttpSender, OtlpJsonEncoder

        sender = OtlpHttpSender(arg)
        encoder = OtlpJsonEncoder()
        return LoopBatchProcessor(encoder.piece, encoder.join, sender.send, sender.close)
    if kind == "otlp-proto":
        return _otlp_proto_processor(arg)
    raise TracingConfigError(f"--traces {spec!r}: use {SPECS}")


def _otlp_proto_processor(endpoint: str) -> SpanProcessor:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    exporter = OTLPSpanExporter(endpoint=endpoint or None)
    client = getattr(exporter, "_client", None)
    if client is None or not callable(getattr(client, "export", None)):
        # An exporter without the client we send through: let the SDK do all of it.
        return BatchSpanProcessor(exporter)

    def encode(spans: list[ReadableSpan]) -> bytes:
        return bytes(encode_spans(spans).SerializePartialToString())

    def send(data: bytes) -> None:
        result = client.export(data)
        if not getattr(result, "success", True):
            log.warning("OTLP export failed: %s", getattr(result, "error", result))

    # The SDK's encoder takes whole batches of spans: the pieces are the spans themselves.
    return LoopBatchProcessor(lambda span: span, encode, send, exporter.shutdown)


class LoopBatchProcessor(SpanProcessor):
    """Encodes each span as it ends, joins a batch's pieces, sends the payload in a thread.

    ``encode`` (a span to its piece) runs in the thread that ends the span, and ``join``
    (a batch of pieces to one payload) in the thread that ends the batch's last span or
    calls :meth:`flush`: both the event loop, for the runtime's spans. ``send`` runs in one
    background thread, one payload at a time; payloads beyond ``max_pending`` waiting are
    dropped (and counted).
    """

    def __init__(
        self,
        encode: Callable[[ReadableSpan], Any],
        join: Callable[[list[Any]], Any],
        send: Callable[[Any], object],
        close: Callable[[], None] | None = None,
        *,
        max_batch: int | None = None,
        max_pending: int = 64,
    ) -> None:
        self._encode = encode
        self._join = join
        self._send = send
        self._close = close
        self.max_batch = max_batch or batch_size()
        self._pieces: list[Any] = []
        self._lock = threading.Lock()
        self._pending: queue.Queue[Any] = queue.Queue(max_pending)
        self.dropped = 0
        self._closed = False
        self._sender = threading.Thread(target=self._run, name="tidings-span-sender", daemon=True)
        self._sender.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if self._closed or context is None or not context.trace_flags & 1:  # not sampled
            return
        try:
            piece = self._encode(span)
        except Exception:
            log.exception("encoding span %r failed; dropped", span.name)
            return
        with self._lock:
            self._pieces.append(piece)
            full = len(self._pieces) >= self.max_batch
        if full:
            self.flush()

    def flush(self) -> None:
        """Join what is batched now and queue it for sending."""
        with self._lock:
            pieces, self._pieces = self._pieces, []
        if not pieces:
            return
        try:
            payload = self._join(pieces)
        except Exception:
            log.exception("encoding %d spans failed; dropped", len(pieces))
            return
        try:
            self._pending.put_nowait(payload)
        except queue.Full:
            self.dropped += len(pieces)
            log.warning("span export is behind; dropped %d spans", len(pieces))

    def _run(self) -> None:
        while True:
            payload = self._pending.get()
            try:
                if payload is None:
                    return
                self._send(payload)
            except Exception:
                log.exception("sending spans failed")
            finally:
                self._pending.task_done()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flush()
        deadline = time.monotonic() + timeout_millis / 1000
        while self._pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._pending.unfinished_tasks

    def shutdown(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._pending.put(None)
        self._sender.join(30)
        if self._close is not None:
            self._close()


class JsonLinesWriter:
    """Appends text to a file, one ``write`` per payload (whole lines, so shareable)."""

    def __init__(self, path: str) -> None:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self.path = path
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")

    def write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _iso(ns: int | None) -> str | None:
    """``2026-01-02T03:04:05.123456Z``; spans of the same second share the formatting."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    if _second[0] != seconds:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second[1]}.{rest // 1000:06d}Z"


class JsonLinesEncoder:
    """Spans as JSON lines in the SDK's JSON form of a span (``ReadableSpan.to_json``).

    Built for less than ``to_json``, which serialises and parses the resource again for
    every span; this encodes each resource once.
    """

    def __init__(self) -> None:
        # id -> (the resource, kept so that its id is not reused, and its JSON)
        self._resources: dict[int, tuple[Any, str]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> str:
        return "".join(self.line(span) for span in spans)

    def line(self, span: ReadableSpan) -> str:
        """One span as one line of JSON (with its newline)."""
        cached = self._resources.get(id(span.resource))
        if cached is not None:
            resource = cached[1]
        else:
            resource = json.dumps(
                {
                    "attributes": dict(span.resource.attributes),
                    "schema_url": span.resource.schema_url,
                }
            )
            self._resources[id(span.resource)] = (span.resource, resource)
        context, parent, status = span.context, span.parent, span.status
        out: dict[str, Any] = {
            "name": span.name,
            "context": None
            if context is None
            else {
                "trace_id": f"0x{context.trace_id:032x}",
                "span_id": f"0x{context.span_id:016x}",
                "trace_state": repr(context.trace_state),
            },
            "kind": str(span.kind),
            "parent_id": None if parent is None else f"0x{parent.span_id:016x}",
            "start_time": _iso(span.start_time),
            "end_time": _iso(span.end_time),
            "status": {"status_code": status.status_code.name},
            "attributes": dict(span.attributes or {}),
            "events": [
                {
                    "name": e.name,
                    "timestamp": _iso(e.timestamp),
                    "attributes": dict(e.attributes or {}),
                }
                for e in span.events
            ],
            "links": [
                {
                    "context": {
                        "trace_id": f"0x{link.context.trace_id:032x}",
                        "span_id": f"0x{link.context.span_id:016x}",
                        "trace_state": repr(link.context.trace_state),
                    },
                    "attributes": dict(link.attributes or {}),
                }
                for link in span.links
            ],
        }
        if status.description:
            out["status"]["description"] = status.description
        # The resource is the same for every span of a process: spliced in, not re-encoded.
        return json.dumps(out)[:-1] + ', "resource": ' + resource + "}\n"
