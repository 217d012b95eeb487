"""``--traces otlp:URL``: a service process posts OTLP/HTTP JSON that a collector can read.

A stand-in collector (an HTTP server in this test) receives what the order service sends;
the requests are checked against the OTLP schema (protobuf's JSON mapping of
``ExportTraceServiceRequest``, from ``opentelemetry-proto``) and for the spans of one order.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from observed_shop import post_order, wait_for

from shop.demo import Shop
from tidings.testing import free_port
from tidings.testing.servers import require_module


class Collector(ThreadingHTTPServer):
    requests: list[tuple[str, str, bytes]]


class Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(("127.0.0.1", 0), Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def spans_in(collector: Collector) -> list[dict[str, Any]]:
    spans = []
    for _, _, body in collector.requests:
        for resource_spans in json.loads(body)["resourceSpans"]:
            service = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    span["service"] = service["service.name"]["stringValue"]
                    span["attrs"] = {a["key"]: a["value"] for a in span.get("attributes", [])}
                    spans.append(span)
    return spans


def test_spans_reach_an_otlp_collector(collector: Collector, tmp_path: Path) -> None:
    shop = Shop(
        tmp_path,
        f"sqlite:///{tmp_path}/log.db",
        f"sqlite:///{tmp_path}/{{service}}.db",
        free_port(),
        "otlp",
    )
    shop.env.update(
        TIDINGS_TRACES=f"otlp:http://127.0.0.1:{collector.server_port}",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        shop.start("order")
        shop.wait_ready()
        with httpx.Client(base_url=f"http://127.0.0.1:{shop.port}", timeout=10) as client:
            order_id = post_order(client, "c01", ("widget", 1))

        def both() -> list[dict[str, Any]] | None:
            spans = spans_in(collector)
            kinds = {s["kind"] for s in spans}
            return spans if {2, 4} <= kinds else None  # SERVER and PRODUCER

        spans = wait_for(both, 15, "the order service's spans at the collector")
    finally:
        shop.stop()

    assert {path for path, _, _ in collector.requests} == {"/v1/traces"}
    assert {ctype for _, ctype, _ in collector.requests} == {"application/json"}
    server = next(s for s in spans if s["kind"] == 2)
    producer = next(s for s in spans if s["kind"] == 4)
    assert server["name"] == "POST /orders" and server["service"] == "order"
    assert producer["name"] == "create shop.orders"
    assert producer["traceId"] == server["traceId"] and len(producer["traceId"]) == 32
    assert producer["parentSpanId"] == server["spanId"]
    assert producer["attrs"]["cloudevents.event_subject"] == {"stringValue": order_id}
    assert producer["attrs"]["messaging.operation.type"] == {"stringValue": "create"}
    assert int(producer["endTimeUnixNano"]) >= int(producer["startTimeUnixNano"]) > 0

    # Every request is a valid ExportTraceServiceRequest (protobuf's JSON mapping wants
    # ids in base64; OTLP/JSON has them in hex, which a receiver converts).
    why = "the collector's own protobuf types parse what the exporter sent"
    json_format = require_module("google.protobuf.json_format", why)
    service = require_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2", why)
    for _, _, body in collector.requests:
        request = json.loads(body)
        for rs in request["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in span:
                            span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
        message = json_format.ParseDict(request, service.ExportTraceServiceRequest())
        assert message.resource_spans[0].scope_spans[0].spans
