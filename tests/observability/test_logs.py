"""Logs are JSON lines, and every line written while handling an event names that event."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from observed_shop import ObservedRun, json_lines, read_log, wait_for

from tidings.envelope import Envelope
from tidings.observability.logs import bind_event, setup_logging, unbind_event


def test_lines_written_while_handling_carry_the_event(observed: ObservedRun) -> None:
    order_id = observed.orders["held"]
    events = {
        env.type: env
        for topic, env in read_log(observed.shop.broker)
        if env.subject == order_id and not topic.endswith(".dlq")
    }
    reserved, placed = events["InventoryReserved"], events["OrderPlaced"]

    def handling_lines() -> list[dict[str, object]]:
        lines = json_lines(observed.workdir / "billing.log")
        return [line for line in lines if line.get("event_id") == reserved.id]

    lines = wait_for(
        lambda: len(handling_lines()) >= 2 and handling_lines(),
        10,
        "billing's log lines about the held payment",
    )
    messages = [str(line["message"]) for line in lines]
    # One line from business code (shop.billing), one from the framework (the dead letter).
    assert any("held for fraud review" in m for m in messages), messages
    assert any("dead-lettering" in m for m in messages), messages
    for line in lines:
        assert line["service"] == "billing"
        assert line["event_type"] == "InventoryReserved"
        assert line["correlation_id"] == placed.id  # the request's first event
        assert line["causation_id"] == placed.id  # OrderPlaced caused InventoryReserved
        assert line["level"] in ("WARNING", "INFO")
        assert len(str(line["trace_id"])) == 32  # tracing is on: the line leads to its trace
        assert str(line["time"]).endswith("Z")
    loggers = {line["logger"] for line in lines}
    assert {"shop.billing", "tidings.runtime"} <= loggers


def test_lines_outside_a_handler_carry_the_service_only() -> None:
    stream = io.StringIO()
    handler = setup_logging("json", "INFO", service="inventory", stream=stream)
    try:
        log = logging.getLogger("tests.logs")
        log.info("starting")
        envelope = Envelope(
            id="e-2",
            source="order",
            type="OrderPlaced",
            subject="o-1",
            data={},
            correlationid="e-1",
            causationid="e-1",
        )

        async def handle() -> None:
            token = bind_event("inventory", envelope)
            try:
                await asyncio.sleep(0)
                log.warning("reserving %s", "o-1", extra={"sku": "widget"})
            finally:
                unbind_event(token)

        asyncio.run(handle())
        log.info("idle again")
    finally:
        logging.getLogger().removeHandler(handler)
    first, during, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["service"] == "inventory" and "event_id" not in first
    assert during["message"] == "reserving o-1"
    assert (
        during["event_type"],
        during["event_id"],
        during["correlation_id"],
        during["causation_id"],
        during["sku"],
    ) == ("OrderPlaced", "e-2", "e-1", "e-1", "widget")
    assert "event_id" not in after
