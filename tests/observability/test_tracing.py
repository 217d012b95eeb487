"""Spans exported by the three service processes form one trace per order, chained right.

Each process writes its spans as JSON lines to its own file (``--traces file:PATH``); the
test reads them all and follows the chain from ``POST /orders`` through every consumer
and producer span, checking trace ids, parent span ids and the services they came from,
and that each envelope's ``traceparent`` in the log names its producer span.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from observed_shop import ObservedRun, json_lines, read_log, wait_for


@dataclasses.dataclass(frozen=True)
class Span:
    name: str
    kind: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start: str
    attributes: dict[str, Any]
    status: str

    @property
    def event_type(self) -> str | None:
        return self.attributes.get("cloudevents.event_type")

    @property
    def subject(self) -> str | None:
        return self.attributes.get("cloudevents.event_subject")


def load_spans(run: ObservedRun) -> list[Span]:
    spans = []
    for path in sorted(run.spans_dir.glob("*.jsonl")):
        for raw in json_lines(path):
            spans.append(
                Span(
                    raw["name"],
                    raw["kind"].removeprefix("SpanKind."),
                    raw["resource"]["attributes"]["service.name"],
                    raw["context"]["trace_id"],
                    raw["context"]["span_id"],
                    raw["parent_id"],
                    raw["start_time"],
                    raw["attributes"],
                    raw["status"]["status_code"],
                )
            )
    return spans


def traced_chain(run: ObservedRun, order_id: str, chain: list[tuple[str, str]]) -> list[Span]:
    """The checked chain of an order, once every process has exported its part of it.

    Each process sends its spans on its own schedule, so the chain is checked again until
    it is complete or 15 s have passed (then the last failure is the test's).
    """
    deadline = time.monotonic() + 15
    while True:
        try:
            return follow_chain(load_spans(run), order_id, chain)
        except (AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def follow_chain(spans: list[Span], order_id: str, chain: list[tuple[str, str]]) -> list[Span]:
    """Check the trace of an order: HTTP root -> create -> (process -> create)*; returns it."""
    placed = [
        s
        for s in spans
        if s.kind == "PRODUCER" and s.event_type == "OrderPlaced" and s.subject == order_id
    ]
    assert len(placed) == 1, placed
    producer = placed[0]
    trace_id = producer.trace_id
    in_trace = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in in_trace}

    root = by_id[producer.parent_id]  # type: ignore[index]
    assert (root.kind, root.service, root.parent_id) == ("SERVER", "order", None)
    assert root.name == "POST /orders"
    assert producer.service == "order" and producer.name == "create shop.orders"
    assert producer.start >= root.start

    path = [root, producer]
    for service, produced_type in chain:
        consumers = [
            s
            for s in in_trace
            if s.kind == "CONSUMER" and s.parent_id == producer.span_id and s.service == service
        ]
        assert len(consumers) == 1, (service, producer.event_type, consumers)
        consumer = consumers[0]
        assert (
            consumer.attributes["messaging.message.id"]
            == producer.attributes["messaging.message.id"]
        )
        assert consumer.attributes["messaging.consumer.group.name"] == service
        assert consumer.attributes["messaging.operation.type"] == "process"
        assert consumer.name == f"process {producer.attributes['messaging.destination.name']}"
        assert consumer.start >= producer.start
        produced = [
            s
            for s in in_trace
            if s.kind == "PRODUCER"
            and s.parent_id == consumer.span_id
            and s.event_type == produced_type
        ]
        assert len(produced) == 1, (service, produced_type, produced)
        producer = produced[0]
        assert producer.service == service
        assert producer.attributes["messaging.operation.type"] == "create"
        path += [consumer, producer]

    # No span of this order's events is in another trace: the chain never broke.
    assert {s.trace_id for s in spans if s.subject == order_id} == {trace_id}
    assert {s.service for s in in_trace} == {"order", "inventory", "billing"}
    return path


def assert_traceparents_match(run: ObservedRun, path: list[Span]) -> None:
    """Each event in the log carries the traceparent of the span that created it."""
    producers = {s.attributes["messaging.message.id"]: s for s in path if s.kind == "PRODUCER"}
    seen = 0
    for _, envelope in read_log(run.shop.broker):
        span = producers.get(envelope.id)
        if span is not None and envelope.traceparent is not None:
            _, trace_id, span_id, flags = envelope.traceparent.split("-")
            assert (f"0x{trace_id}", f"0x{span_id}") == (span.trace_id, span.span_id)
            assert int(flags, 16) & 1, "sampled"
            seen += 1
    assert seen >= len(producers), "every produced event of the chain is in the log"


def test_a_completed_order_is_one_trace_across_three_processes(observed: ObservedRun) -> None:
    order_id = observed.orders["completed"]
    path = traced_chain(
        observed,
        order_id,
        [
            ("inventory", "InventoryReserved"),
            ("billing", "PaymentProcessed"),
            ("order", "OrderCompleted"),
        ],
    )
    assert [s.event_type for s in path if s.kind == "PRODUCER"] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "OrderCompleted",
    ]
    assert_traceparents_match(observed, path)


def test_a_cancelled_order_traces_the_compensation(observed: ObservedRun) -> None:
    order_id = observed.orders["payment_failed"]
    path = traced_chain(
        observed,
        order_id,
        [
            ("inventory", "InventoryReserved"),
            ("billing", "PaymentFailed"),
            ("inventory", "InventoryReleased"),  # compensation: the reservation is released
            ("order", "OrderCancelled"),
        ],
    )
    assert [s.service for s in path] == [
        "order",
        "order",
        "inventory",
        "inventory",
        "billing",
        "billing",
        "inventory",
        "inventory",
        "order",
        "order",
    ]
    assert_traceparents_match(observed, path)


def test_a_dead_lettered_handling_is_an_error_span(observed: ObservedRun) -> None:
    order_id = observed.orders["held"]

    def billing_span() -> Span | None:
        return next(
            (
                s
                for s in load_spans(observed)
                if s.kind == "CONSUMER" and s.service == "billing" and s.subject == order_id
            ),
            None,
        )

    span = wait_for(billing_span, 15, "billing's span of the held order")
    assert span.status == "ERROR"
    assert span.attributes["tidings.dead_letter.kind"] == "non_recoverable"
    assert "non-recoverable" in span.attributes["tidings.dead_letter.reason"]
    placed = next(
        s
        for s in load_spans(observed)
        if s.kind == "PRODUCER" and s.event_type == "OrderPlaced" and s.subject == order_id
    )
    assert span.trace_id == placed.trace_id
