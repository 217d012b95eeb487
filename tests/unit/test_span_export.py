"""The hand-written span encoders say what the SDK's own encoders say.

Spans of every shape the runtime makes (lean consumer and producer spans, a span that
ended with an error and a retry event) and one from the SDK's tracer (links, non-string
attributes) are encoded by :class:`OtlpJsonEncoder` one by one as they end, joined into
one request, and compared with the SDK's protobuf encoding of the same spans.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanKind

from tidings.envelope import Envelope, new_event_id
from tidings.observability.export import JsonLinesEncoder, LoopBatchProcessor
from tidings.observability.otlp import OtlpJsonEncoder
from tidings.observability.tracing import (
    Tracing,
    span_context_from_traceparent,
    traceparent_of,
)
from tidings.records import Record
from tidings.reliability.deadletter import DeadLetterKind, DeadLetterReason
from tidings.testing.servers import require_module

_WHY = "the SDK's protobuf encoder is the reference the hand-written encoders are checked against"
json_format = require_module("google.protobuf.json_format", _WHY)
trace_service = require_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2", _WHY)
trace_encoder = require_module("opentelemetry.exporter.otlp.proto.common.trace_encoder", _WHY)


class Captured:
    """A processor's send: what would have gone to the collector."""

    def __init__(self) -> None:
        self.payloads: list[Any] = []

    def send(self, payload: Any) -> None:
        self.payloads.append(payload)


def make_spans() -> tuple[list[ReadableSpan], list[bytes], str]:
    encoder, sent, ended = OtlpJsonEncoder(), Captured(), []

    def piece(span: ReadableSpan) -> Any:
        ended.append(span)
        return encoder.piece(span)

    processor = LoopBatchProcessor(piece, encoder.join, sent.send, max_batch=4)
    tracing = Tracing("billing", processor, system="kafka")
    placed = Envelope(new_event_id(), "shop.order", "OrderPlaced", "o-1", {"n": 1})
    placed = tracing.produce("shop.orders", placed)
    record = Record("shop.orders", 2, 7, "o-1", b"{}", {}, time.time())
    with tracing.consume("billing", placed, record) as span:
        tracing.produce("shop.billing", Envelope(new_event_id(), "b", "Charged", "o-1", {}))
        span.set_attribute("shop.amount", 12.5)
    with tracing.consume("billing", placed, record):
        tracing.retrying(1, TimeoutError("slow"))
        error = ValueError('card "declined"\n')
        tracing.dead_lettered(DeadLetterReason(DeadLetterKind.NON_RECOVERABLE, "no"), error)
    tracer = tracing.provider.get_tracer("handler", "2.0")
    with tracer.start_as_current_span(
        "lookup ü",
        kind=SpanKind.CLIENT,
        links=[Link(span.get_span_context(), {"why": "because"})],
        attributes={"n": 3, "ok": True, "ratio": 0.5, "tags": ["a", "b"], "ns": [1, 2]},
    ):
        pass
    processor.shutdown()
    return ended, sent.payloads, traceparent_of(span.get_span_context())


def without_flags(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans of a request as dicts, with their scope and resource, sorted by id."""
    spans = []
    for rs in message["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                span.pop("flags", None)  # the SDK's is-remote bits, not in the JSON form
                for link in span.get("links", []):
                    link.pop("flags", None)
                    link.pop("traceState", None)
                span.pop("traceState", None)
                span["scope"] = ss["scope"]
                span["resource"] = rs["resource"]
                spans.append(span)
    return sorted(spans, key=lambda s: s["spanId"])


def test_otlp_json_encodes_spans_as_the_sdk_encoder_does() -> None:
    spans, payloads, _ = make_spans()
    assert len(spans) == 5 and len(payloads) == 2  # a full batch of 4, then the rest

    ours = []
    for payload in payloads:
        request = json.loads(payload)
        for rs in request["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:  # OTLP/JSON ids are hex, protobuf's JSON base64
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in span:
                            span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                    for link in span.get("links", []):
                        for key in ("traceId", "spanId"):
                            link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
        parsed = json_format.ParseDict(request, trace_service.ExportTraceServiceRequest())
        ours += without_flags(json_format.MessageToDict(parsed))
    sdk = without_flags(json_format.MessageToDict(trace_encoder.encode_spans(spans)))

    assert sorted(ours, key=lambda s: s["spanId"]) == sdk
    kinds = {s["name"]: s["kind"] for s in ours}
    assert kinds["create shop.orders"] == "SPAN_KIND_PRODUCER"
    assert kinds["process shop.orders"] == "SPAN_KIND_CONSUMER"
    assert kinds["lookup ü"] == "SPAN_KIND_CLIENT"
    failed = next(s for s in ours if s.get("status", {}).get("code") == "STATUS_CODE_ERROR")
    assert [e["name"] for e in failed["events"]] == ["retry", "exception"]


def test_json_lines_are_the_sdks_json_form() -> None:
    spans, _, _ = make_spans()
    encoder = JsonLinesEncoder()
    for span in spans:
        ours = json.loads(encoder.line(span))
        theirs = json.loads(span.to_json())
        # The SDK rounds timestamps to microseconds, this encoder truncates them.
        times = [
            (mine, sdks)
            for entry, other in [
                (ours, theirs),
                *zip(ours["events"], theirs["events"], strict=True),
            ]
            for mine, sdks in [
                (entry.pop(key, None), other.pop(key, None))
                for key in ("start_time", "end_time", "timestamp")
            ]
        ]
        for mine, sdks in times:
            assert (mine is None) == (sdks is None)
            if mine is not None:
                assert abs(instant(mine) - instant(sdks)) <= timedelta(microseconds=1), (mine, sdks)
        assert ours == theirs


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_traceparents_round_trip_and_bad_ones_are_refused() -> None:
    _, _, traceparent = make_spans()
    context = span_context_from_traceparent(traceparent)
    assert context is not None and context.is_remote and context.trace_flags.sampled
    assert traceparent_of(context) == traceparent
    unsampled = traceparent[:-2] + "00"
    parsed = span_context_from_traceparent(unsampled)
    assert parsed is not None and not parsed.trace_flags.sampled
    for bad in (
        None,
        "",
        traceparent[:-1],  # too short
        "01" + traceparent[2:],  # unknown version
        traceparent.replace("-", "_", 1),
        traceparent[:3] + "0" * 32 + traceparent[35:],  # the invalid trace id
        traceparent[:53] + "zz",
    ):
        assert span_context_from_traceparent(bad) is None, bad
