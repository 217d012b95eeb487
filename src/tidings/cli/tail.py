"""``tidings tail TOPIC``: print a topic's events as they arrive, decoded (like ``kcat -C``).

Tail reads partitions directly (``Transport.read``), without a consumer group, so it
commits nothing and leaves no group behind in ``tidings lag``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import typer

from tidings import codec
from tidings.cli.common import (
    BROKER_HELP,
    err_console,
    fail,
    opened_transport,
    parse_duration,
    run_async,
)
from tidings.credentials import redact
from tidings.envelope import Envelope
from tidings.host import DEFAULT_BROKER
from tidings.transport import Record, Transport

Start = Literal["end", "beginning"] | float  # a float: from that time (seconds since the epoch)

async def _first_offset(
    transport: Transport, topic: str, partition: int, end: int, start: Start, known: bool
) -> int:
    """Where to start reading a partition. ``known``: it existed when tail started (a
    partition that appears later holds only new records, so it is read from 0)."""
    if start == "end":
        return end if known else 0
    if start == "beginning":
        return 0
    # follow() still drops what was stored before the time: Kafka's timestamps (set by the
    # producer) need not grow along a partition.
    return await transport.offset_for_time(topic, partition, start) if known else 0


async def follow(
    transport: Transport,
    topic: str,
    start: Start = "end",
    *,
    poll_interval: float = 0.2,
    batch: int = 500,
    started: Callable[[], None] | None = None,
) -> AsyncGenerator[Record, None]:
    """The records of ``topic`` from ``start`` on, then each new one as it arrives (forever).

    Partitions are read round-robin, so order holds per partition (per key), not across.
    A topic that does not exist yet is waited for. ``started`` is called once the start
    positions are fixed: whatever is published after that call is read.
    """
    since = start if isinstance(start, float) else None
    positions: dict[int, int] = {}
    first_listing = True
    next_listing = 0.0
    while True:
        now = time.monotonic()
        if now >= next_listing:  # find the topic's partitions (new ones, too), now and then
            info = next((t for t in await transport.topics() if t.name == topic), None)
            for partition, end in sorted(info.end_offsets.items() if info else ()):
                if partition not in positions:
                    positions[partition] = await _first_offset(
                        transport, topic, partition, end, start, first_listing
                    )
            if first_listing and started is not None:
                started()
            first_listing = False
            next_listing = now + (5.0 if positions else 1.0)
        got = 0
        for partition, offset in sorted(positions.items()):
            records = await transport.read(topic, partition, offset, batch)
            if records:
                positions[partition] = records[-1].offset + 1
                got += len(records)
            for record in records:
                if since is None or record.timestamp >= since:
                    yield record
        if not got:
            await asyncio.sleep(poll_interval)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_json(envelope: Envelope) -> dict[str, Any]:
    """The envelope in the CloudEvents JSON format (attributes that are not set left out)."""
    attributes: dict[str, Any] = {
        "specversion": envelope.specversion,
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
        "time": envelope.time.isoformat(),
        "subject": envelope.subject,
        "datacontenttype": envelope.datacontenttype,
        "dataschema": envelope.dataschema,
        "correlationid": envelope.correlationid,
        "causationid": envelope.causationid,
        "traceparent": envelope.traceparent,
    }
    body = {name: value for name, value in attributes.items() if value is not None}
    body["data"] = envelope.data
    return body


def undecodable_json(record: Record, reason: str) -> dict[str, Any]:
    """A record that is not a CloudEvent: where it is, why, and its bytes as text."""
    return {
        "undecodable": reason,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "timestamp": _iso(datetime.fromtimestamp(record.timestamp, UTC)),
        "headers": dict(record.headers),
        "value": record.value.decode(errors="replace"),
    }


def render(record: Record, as_json: bool) -> str:
    """One line for one record: decoded, or marked as undecodable with the reason."""
    try:
        envelope = codec.decode(record)
    except codec.DecodeError as exc:
        if as_json:
            return json.dumps(undecodable_json(record, str(exc)), ensure_ascii=False)
        when = _iso(datetime.fromtimestamp(record.timestamp, UTC))
        return (
            f"{when}  (undecodable)  {record.key or '-'}  {record.partition}:{record.offset}  {exc}"
        )
    if as_json:
        return json.dumps(event_json(envelope), ensure_ascii=False)
    data = json.dumps(envelope.data, ensure_ascii=False, separators=(",", ":"))
    return (
        f"{_iso(envelope.time)}  {envelope.type}  {envelope.subject or '-'}  {envelope.id}  {data}"
    )


def tail(
    topic: str = typer.Argument(..., help="The topic to read"),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the first record (default: new events only)"
    ),
    since: str = typer.Option(
        "", "--since", show_default=False, help="Start at records stored this long ago: 30s, 5m, 2h"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One CloudEvents JSON object per line, every attribute"
    ),
    max_events: int | None = typer.Option(
        None, "--max", "-n", min=1, help="Stop after this many records"
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.0, help="Stop after this many seconds"
    ),
    broker: str = typer.Option(
        DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP
    ),
) -> None:
    """Print TOPIC's events as they arrive, one line each: time, type, subject, id, data.

    Stops at Ctrl-C, or with --max or --timeout.
    """
    if from_beginning and since:
        raise fail("--from-beginning and --since exclude each other: pick one")
    start: Start = "beginning" if from_beginning else "end"
    if since:
        try:
            start = time.time() - parse_duration(since)
        except ValueError as exc:
            raise fail(str(exc)) from None

    where = f"since {since}" if since else "from the beginning" if from_beginning else "new events"

    def started() -> None:
        err_console.print(
            f"tailing {topic} ({where}) on {redact(broker)}", highlight=False, markup=False, soft_wrap=True
        )

    @run_async
    async def main() -> None:
        async with opened_transport(broker, needs="tidings tail:offsets") as transport:
            printed = 0
            deadline = asyncio.timeout(timeout)  # None: no deadline
            try:
                records = follow(transport, topic, start, started=started)
                async with deadline, contextlib.aclosing(records):
                    async for record in records:
                        print(render(record, as_json), flush=True)
                        printed += 1
                        if max_events is not None and printed >= max_events:
                            break
            except TimeoutError:
                if not deadline.expired():
                    raise  # a timeout of the broker's, not --timeout

    try:
        main()
    except BrokenPipeError:  # `tidings tail ... | head`: the reader has gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
