"""OTLP/HTTP with JSON encoding: spans to a collector (Jaeger, the OpenTelemetry Collector).

Why not the SDK's OTLP exporter by default: it builds protobuf objects span by span, which
measured about 55 us per span here, several times what producing the span costs; this
encoder writes the OTLP JSON form (the same schema, which every OTLP/HTTP receiver
accepts as ``application/json``) for about a quarter of that. ``--traces otlp-proto``
still selects the SDK's protobuf exporter (package ``opentelemetry-exporter-otlp-proto-
http``) for receivers that take protobuf only.

Configuration is the standard one: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL)
or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is appended; default
``http://localhost:4318``), ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`` (``k=v,k2=v2``) and
``OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`` (seconds, default 10).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

log = logging.getLogger("tidings.tracing")
DEFAULT_ENDPOINT = "http://localhost:4318"
_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}
_RETRYABLE = {429, 502, 503, 504}
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def traces_endpoint(url: str = "") -> str:
    """The URL spans are posted to: ``url`` if given, else from the standard variables."""
    if url:
        return url if url.rstrip("/").endswith("/v1/traces") else url.rstrip("/") + "/v1/traces"
    signal = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if signal:
        return signal
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


def _headers() -> dict[str, str]:
    text = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        headers[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    headers["Content-Type"] = "application/json"
    return headers


def _value(value: Any) -> str:
    """An ``AnyValue`` as JSON text (strings first: nearly every attribute is one)."""
    kind = type(value)
    if kind is str:
        return '{"stringValue":' + _quote(value) + "}"
    if kind is bool:
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if kind is int:
        return '{"intValue":"' + str(value) + '"}'  # int64 is a string in protobuf's JSON
    if kind is float:
        return '{"doubleValue":' + json.dumps(value) + "}"
    if kind is bytes:
        return '{"bytesValue":"' + base64.b64encode(value).decode() + '"}'
    if isinstance(value, (list, tuple)):
        return '{"arrayValue":{"values":[' + ",".join(_value(v) for v in value) + "]}}"
    return '{"stringValue":' + _quote(str(value)) + "}"


class OtlpJsonEncoder:
    """Spans to an OTLP ``ExportTraceServiceRequest`` in JSON, grouped by resource and scope.

    The JSON is written as text from small pieces (attribute keys are escaped once and
    cached, values by the C string escaper): the OTLP JSON form is verbose, a dict per
    attribute, and building those dicts for ``json.dumps`` cost three times as much.
    """

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}
        self._resources: dict[int, str] = {}

    def attributes(self, attributes: Mapping[str, Any] | None) -> str:
        parts = []
        keys = self._keys
        for key, value in (attributes or {}).items():
            prefix = keys.get(key)
            if prefix is None:
                prefix = keys[key] = '{"key":' + _quote(key) + ',"value":'
            if type(value) is str:  # the common case, inlined
                parts.append(prefix + '{"stringValue":' + _quote(value) + "}}")
            else:
                parts.append(prefix + _value(value) + "}")
        return "[" + ",".join(parts) + "]"

    def span(self, span: ReadableSpan) -> str:
        context, parent, status = span.context, span.parent, span.status
        assert context is not None
        text = (
            f'{{"traceId":"{context.trace_id:032x}","spanId":"{context.span_id:016x}"'
            + ("" if parent is None else f',"parentSpanId":"{parent.span_id:016x}"')
            + ',"name":'
            + _quote(span.name)
            + f',"kind":{_KINDS.get(span.kind, 1)}'
            + f',"startTimeUnixNano":"{span.start_time or 0}","endTimeUnixNano":"{span.end_time or 0}"'
            + ',"attributes":'
            + self.attributes(span.attributes)
            + ',"status":{"code":'
            + str(_STATUS[status.status_code])
            + ("" if not status.description else ',"message":' + _quote(status.description))
            + "}"
        )
        if span.events:
            text += (
                ',"events":['
                + ",".join(
                    f'{{"timeUnixNano":"{e.timestamp}","name":{_quote(e.name)},'
                    f'"attributes":{self.attributes(e.attributes)}}}'
                    for e in span.events
                )
                + "]"
            )
        if span.links:
            text += (
                ',"links":['
                + ",".join(
                    f'{{"traceId":"{link.context.trace_id:032x}","spanId":"{link.context.span_id:016x}",'
                    f'"attributes":{self.attributes(link.attributes)}}}'
                    for link in span.links
                )
                + "]"
            )
        return text + "}"

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        groups: dict[int, tuple[Any, dict[tuple[str, str], list[str]]]] = {}
        for span in spans:
            resource = span.resource
            _, scopes = groups.setdefault(id(resource), (resource, {}))
            scope = span.instrumentation_scope
            key = (scope.name, scope.version or "") if scope is not None else ("", "")
            scopes.setdefault(key, []).append(self.span(span))
        resource_spans = []
        for resource, scopes in groups.values():
            scope_spans = ",".join(
                '{"scope":{"name":' + _quote(name) + ',"version":' + _quote(version) + "},"
                '"spans":[' + ",".join(items) + "]}"
                for (name, version), items in scopes.items()
            )
            resource_spans.append(
                '{"resource":{"attributes":'
                + self._resource(resource)
                + '},"scopeSpans":['
                + scope_spans
                + "]}"
            )
        return ('{"resourceSpans":[' + ",".join(resource_spans) + "]}").encode()

    def _resource(self, resource: Any) -> str:
        cached = self._resources.get(id(resource))
        if cached is None:
            cached = self._resources[id(resource)] = self.attributes(resource.attributes)
        return cached


class OtlpHttpSender:
    """Posts encoded requests over one kept-alive connection, retrying what the spec says
    to retry (429, 502-504, connection errors); never raises. Runs in the sender thread."""

    def __init__(self, endpoint: str = "", *, attempts: int = 3) -> None:
        self.endpoint = traces_endpoint(endpoint)
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: expected http(s)://host:port/...")
        self._url = url
        self._path = url.path or "/v1/traces"
        self.headers = _headers()
        timeout = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        )
        self.timeout = float(timeout) if timeout else 10.0
        self.attempts = attempts
        self.sent = 0
        self.failed = 0
        self._connection: http.client.HTTPConnection | None = None
        self._warned_at = 0.0

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            cls = (
                http.client.HTTPSConnection
                if self._url.scheme == "https"
                else http.client.HTTPConnection
            )
            self._connection = cls(self._url.hostname or "", self._url.port, timeout=self.timeout)
        return self._connection

    def send(self, body: bytes) -> bool:
        delay = 0.5
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                connection = self._connect()
                connection.request("POST", self._path, body, self.headers)
                response = connection.getresponse()
                response.read()
                if 200 <= response.status < 300:
                    self.sent += 1
                    return True
                error, retry = f"HTTP {response.status}", response.status in _RETRYABLE
            except (OSError, http.client.HTTPException) as exc:
                self.close()  # a broken connection: open a new one next time
                error, retry = f"{type(exc).__name__}: {exc}", True
            if not retry or attempt == self.attempts:
                break
            time.sleep(delay)
            delay *= 2
        self.failed += 1
        if time.monotonic() - self._warned_at > 60:  # a missing collector: say so once a minute
            self._warned_at = time.monotonic()
            log.warning("OTLP export to %s failed (%s); spans dropped", self.endpoint, error)
        return False

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
