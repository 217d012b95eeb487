"""Tidings against FastStream: the same pydantic handler draining the same events.

    python -m bench faststream                  # both brokers; writes bench/results/faststream.json
    python -m bench.faststream [--broker kafka|nats|all] [--kafka-events 20000]
        [--nats-events 20000] [--postgres-events 20000] [--rounds 5]
    python -m bench.faststream --profile kafka [--store sqlite|postgres]

(Run it as a module: a script run as ``bench/faststream.py`` would import itself as
``faststream``.)

**What is measured.** Each round pre-publishes N ~1 KiB ``OrderPlaced`` events (an order
id, a customer, three lines, a notes string that pads the JSON to 1 KiB) to a fresh topic
or stream per side, then starts one consumer on it and times from the first event handed
to the handler until the N-th is handled: events/s of draining a backlog, one process,
one consumer, nothing published while the clock runs. The handler is the same on both
sides: the payload validated into the same pydantic model, the lines totalled, a count.
Next to events/s, the process's CPU time per event over the same window (all threads).

* **Tidings**: a :class:`~tidings.Service` with one ``@service.on`` handler, run by a
  :class:`~tidings.runtime.Runtime` with its defaults (fetches of 200; a partition's
  records of a fetch handled in runs of up to 100 per unit of work) on the broker with a
  real store, so the inbox is on: a unit of work checks the inbox for the run, runs each
  handler in a savepoint, marks the events seen and commits; then the batch is acked.
  The store is SQLite in a file in a temporary directory (the default deployment) and,
  as a second Tidings side, PostgreSQL (``--postgres-events`` per round; a commit waits
  for the disk's fsync there). "Handled" is counted once the unit of work has committed
  (the runtime's ``on_handled`` hook).
* **FastStream**: a ``broker.subscriber`` with the same model and body, its defaults
  otherwise: on Kafka its default ack policy (``ack_first``: the client auto-commits,
  no per-event commit), on NATS a JetStream pull consumer (``PullSub(batch_size=200)``;
  the runtime fetches 200 too) acking each message after the handler. Its per-message
  access log is off (``logger=None``), as Tidings logs nothing per event. "Handled" is
  counted when the handler returns. Both of its Kafka clients are measured,
  ``faststream.confluent`` (confluent-kafka, the client Tidings uses) and
  ``faststream.kafka`` (aiokafka); the ratio is against the faster of the two.

**Wire formats**: each side reads its natural one. Tidings reads CloudEvents (binary mode
on Kafka: ``ce_*`` headers and the JSON payload as value; structured mode on NATS: one
JSON object holding the attributes and ``data``), published with Tidings' own codec;
FastStream reads the plain JSON of the model (``content-type: application/json``).

**Brokers**: Kafka topics have 3 partitions on every side (Tidings' default; the runtime
handles partitions concurrently, FastStream's subscriber one message after another). On
NATS, Tidings maps a partition to a stream; its topic here has 1 partition, so each side
reads exactly one stream.

Rounds alternate the order of the sides (forward, then reversed, ...); the figures are
medians of the rounds. ``<broker>_ratio`` is Tidings' events/s (SQLite store) over
FastStream's on the same broker (``_ratio_postgres``: with PostgreSQL), and
``<broker>_cpu_ratio`` FastStream's CPU per event over Tidings', which other load on the
machine disturbs less. Every round has a timeout; the topics, streams, consumer groups
and inbox rows made here are deleted at the end. Absolute numbers move with the
machine's load; the ratios, measured in one run, are what to read.

``--profile`` runs the Tidings side once under cProfile and writes the microseconds per
event of its parts (decode, validate, inbox SELECT, handler, inbox INSERT, commit,
fetch, ack) to ``bench/results/faststream_profile_<broker>_<store>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import logging
import os
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tidings import codec
from tidings.envelope import Envelope
from tidings.messages import Event, new_envelope
from tidings.records import OutgoingRecord, Record
from tidings.runtime import Observer, Outcome, Runtime
from tidings.service import Context, Service
from tidings.store import make_store
from tidings.transport import make_transport, open_transport

KAFKA = "kafka://127.0.0.1:9092"
NATS = "nats://127.0.0.1:4222"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/tidings"
PAYLOAD_BYTES = 1024
KAFKA_PARTITIONS = 3
PUBLISH_BATCH = 500
PULL_BATCH = 200  # FastStream's NATS pull batch; the Runtime's fetch_max is 200 as well
ROUND_TIMEOUT = 180.0  # seconds for one side to drain one round's events
PREFIX = "benchfs"
RESULTS = Path(__file__).parent / "results"


class Line(BaseModel):
    sku: str
    quantity: int
    price_cents: int


class OrderPlaced(Event, topic="bench.faststream.orders", key="order_id"):
    """The event both sides handle (the topic is replaced per round, see ``_on_topic``)."""

    order_id: str
    customer_id: str
    lines: list[Line]
    currency: str
    notes: str


def _on_topic(topic: str) -> type[OrderPlaced]:
    """``OrderPlaced`` declared on this round's topic (Tidings reads the topic off the class)."""

    class RoundOrderPlaced(OrderPlaced, topic=topic, type="OrderPlaced"):
        pass

    return RoundOrderPlaced


def make_events(n: int) -> list[OrderPlaced]:
    """``n`` orders whose JSON is ``PAYLOAD_BYTES`` long (padded with notes)."""
    events = []
    for i in range(n):
        lines = [Line(sku=f"sku-{(i + j) % 97:04d}", quantity=1 + j, price_cents=499 + 100 * j)
                 for j in range(3)]  # fmt: skip
        event = OrderPlaced(order_id=f"order-{i:08d}", customer_id=f"customer-{i % 50:03d}",
                            lines=lines, currency="EUR", notes="")  # fmt: skip
        pad = PAYLOAD_BYTES - len(event.model_dump_json())
        events.append(event.model_copy(update={"notes": "n" * max(pad, 0)}))
    return events


def tally(event: OrderPlaced) -> int:
    """The handler's work on both sides: the order's total."""
    return sum(line.quantity * line.price_cents for line in event.lines)


class Drain:
    """Counts handled events; the time from the first handled to the N-th."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.cents = 0
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_first = self.cpu_last = 0.0  # process CPU time, all threads
        self.done = asyncio.Event()

    def begin(self, event: OrderPlaced) -> None:
        """Called by the handler: the first call starts the clock."""
        if self.first is None:
            self.first, self.cpu_first = time.perf_counter(), time.process_time()
        self.cents += tally(event)

    def handled(self) -> None:
        self.count += 1
        if self.count == self.n:
            self.last, self.cpu_last = time.perf_counter(), time.process_time()
            self.done.set()

    async def measured(self, timeout: float, what: str) -> tuple[float, float]:
        """Events/s and CPU microseconds per event, once the N-th is handled."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"{what}: handled {self.count} of {self.n} events in {timeout:.0f}s"
            ) from None
        assert self.first is not None and self.last is not None
        return self.n / (self.last - self.first), (self.cpu_last - self.cpu_first) / self.n * 1e6


class _Counting(Observer):
    """Counts an event as handled once its unit of work committed."""

    def __init__(self, drain: Drain) -> None:
        self.drain = drain

    def on_handled(
        self,
        service: str,
        envelope: Envelope | None,
        record: Record,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        if outcome == "handled":
            self.drain.handled()


# -- the sides ---------------------------------------------------------------------------


async def run_tidings(
    broker: str, store_url: str, topic: str, group: str, n: int, timeout: float
) -> tuple[float, float]:
    """Events/s of a Tidings service draining ``topic`` (inbox on, in ``store_url``)."""
    drain = Drain(n)
    service = Service(group)

    @service.on(_on_topic(topic))
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        drain.begin(event)

    transport = make_transport(broker)
    store = make_store(store_url, service.name)
    await transport.connect()
    try:
        await store.connect()
        runtime = Runtime(service, transport, store, observer=_Counting(drain))
        try:
            await runtime.start()
            return await drain.measured(timeout, f"tidings on {broker}, {store_url}")
        finally:
            await runtime.stop()
            await store.close()
    finally:
        await transport.close()


async def run_faststream_kafka(
    client: str, topic: str, group: str, n: int, timeout: float
) -> tuple[float, float]:
    """Events/s of a FastStream Kafka subscriber (``client``: confluent or aiokafka)."""
    if client == "confluent":
        from faststream.confluent import KafkaBroker
    else:
        from faststream.kafka import KafkaBroker
    drain = Drain(n)
    broker = KafkaBroker("127.0.0.1:9092", logger=None)

    @broker.subscriber(topic, group_id=group, auto_offset_reset="earliest")
    async def on_order(event: OrderPlaced) -> None:
        drain.begin(event)
        drain.handled()

    await broker.start()
    try:
        return await drain.measured(timeout, f"faststream.{client} on Kafka")
    finally:
        await broker.stop()


async def run_faststream_nats(
    stream: str, subject: str, group: str, n: int, timeout: float
) -> tuple[float, float]:
    """Events/s of a FastStream JetStream pull subscriber on an existing stream."""
    from faststream.nats import JStream, NatsBroker, PullSub

    drain = Drain(n)
    broker = NatsBroker(NATS, logger=None)

    @broker.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=group,
        pull_sub=PullSub(batch_size=PULL_BATCH),
    )
    async def on_order(event: OrderPlaced) -> None:
        drain.begin(event)
        drain.handled()

    await broker.start()
    try:
        return await drain.measured(timeout, "faststream.nats")
    finally:
        await broker.stop()


# -- publishing the backlog --------------------------------------------------------------


def tidings_records(
    events: Sequence[OrderPlaced], topic: str, mode: codec.ContentMode
) -> list[OutgoingRecord]:
    """CloudEvents, as a Tidings service publishes them (new ids every call)."""
    kind = _on_topic(topic)
    return [
        codec.encode(new_envelope(kind.model_validate(e.model_dump()), source="bench"), topic, mode)
        for e in events
    ]


def plain_records(events: Sequence[OrderPlaced], topic: str) -> list[OutgoingRecord]:
    """The model's JSON, as a FastStream publisher sends it."""
    headers = {"content-type": "application/json"}
    return [
        OutgoingRecord(topic, e.model_dump_json().encode(), e.order_id, headers) for e in events
    ]


async def publish_all(transport: Any, records: Sequence[OutgoingRecord]) -> None:
    for i in range(0, len(records), PUBLISH_BATCH):
        await transport.publish(records[i : i + PUBLISH_BATCH])


# -- a broker's rounds -------------------------------------------------------------------

Measured = tuple[float, float]  # events/s, CPU microseconds per event (whole process)
Side = Callable[[int, str], Awaitable[Measured]]  # (round, side's name for topics) -> ...


async def kafka_rounds(
    ns: dict[str, int], rounds: int, token: str, stores: dict[str, str]
) -> dict[str, list[Measured]]:
    """``ns``: events per round of each side (``tidings_sqlite``, ...)."""
    events = make_events(max(ns.values()))
    transport = await open_transport(KAFKA)

    async def tidings(store: str, r: int, side: str, n: int) -> Measured:
        topic = f"{PREFIX}.{token}.{side}.{r}"
        await transport.create_topic(topic, KAFKA_PARTITIONS)
        await publish_all(transport, tidings_records(events[:n], topic, "binary"))
        return await run_tidings(
            KAFKA, store, topic, f"{PREFIX}-{token}-{side}-{r}", n, ROUND_TIMEOUT
        )

    async def faststream(client: str, r: int, side: str, n: int) -> Measured:
        topic = f"{PREFIX}.{token}.{side}.{r}"
        await transport.create_topic(topic, KAFKA_PARTITIONS)
        await publish_all(transport, plain_records(events[:n], topic))
        return await run_faststream_kafka(
            client, topic, f"{PREFIX}-{token}-{side}-{r}", n, ROUND_TIMEOUT
        )

    sides: dict[str, Side] = {
        f"tidings_{name}": functools.partial(tidings, url, n=ns[f"tidings_{name}"])
        for name, url in stores.items()
    }
    for client in ("confluent", "aiokafka"):
        sides[f"faststream_{client}"] = functools.partial(faststream, client, n=ns["faststream"])
    try:
        return await _alternate(sides, rounds, "kafka")
    finally:
        await transport.close()
        await _clean_kafka(token, stores)


async def nats_rounds(
    ns: dict[str, int], rounds: int, token: str, stores: dict[str, str]
) -> dict[str, list[Measured]]:
    import nats

    events = make_events(max(ns.values()))
    transport = await open_transport(NATS)
    nc = await nats.connect(NATS)
    js = nc.jetstream()

    async def tidings(store: str, r: int, side: str, n: int) -> Measured:
        topic = f"{PREFIX}.{token}.{side}.{r}"
        await transport.create_topic(topic, 1)
        await publish_all(transport, tidings_records(events[:n], topic, transport.content_mode))
        return await run_tidings(
            NATS, store, topic, f"{PREFIX}-{token}-{side}-{r}", n, ROUND_TIMEOUT
        )

    async def faststream(r: int, side: str, n: int) -> Measured:
        stream, subject = f"{PREFIX}_{token}_{side}_{r}", f"{PREFIX}.{token}.{side}.{r}"
        await js.add_stream(name=stream, subjects=[subject])
        headers = {"content-type": "application/json"}
        bodies = [e.model_dump_json().encode() for e in events[:n]]
        for i in range(0, n, PUBLISH_BATCH):
            acks = [await js.publish_async(subject, body, headers=headers)
                    for body in bodies[i : i + PUBLISH_BATCH]]  # fmt: skip
            await asyncio.gather(*acks)
        return await run_faststream_nats(
            stream, subject, f"{PREFIX}-{token}-{side}-{r}", n, ROUND_TIMEOUT
        )

    sides: dict[str, Side] = {
        f"tidings_{name}": functools.partial(tidings, url, n=ns[f"tidings_{name}"])
        for name, url in stores.items()
    }
    sides["faststream"] = functools.partial(faststream, n=ns["faststream"])
    try:
        return await _alternate(sides, rounds, "nats")
    finally:
        await transport.close()
        await nc.close()
        await _clean_nats(token, stores)


async def _alternate(sides: dict[str, Side], rounds: int, broker: str) -> dict[str, list[Measured]]:
    results: dict[str, list[Measured]] = {name: [] for name in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            rate, cpu = await sides[name](r, name.replace("_", ""))
            results[name].append((rate, cpu))
            print(f"  {broker} round {r + 1}/{rounds}  {name:22s} {rate:9,.0f} events/s"
                  f"  {cpu:6,.0f} us CPU/event", flush=True)  # fmt: skip
    return results


async def _clean_kafka(token: str, stores: dict[str, str]) -> None:
    """Delete this run's topics and consumer groups, and its inbox rows."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
    loop = asyncio.get_running_loop()
    metadata = await loop.run_in_executor(None, functools.partial(admin.list_topics, timeout=10))
    topics = [t for t in metadata.topics if token in t]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)
    listed = await asyncio.wrap_future(admin.list_consumer_groups(request_timeout=10))
    groups = [g.group_id for g in listed.valid if token in g.group_id]
    if groups:
        for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)
    await _clean_inbox(token, stores)


async def _clean_nats(token: str, stores: dict[str, str]) -> None:
    """Delete this run's streams (with their consumers), and its inbox rows."""
    import nats

    nc = await nats.connect(NATS)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if token in info.config.name:
                with contextlib.suppress(Exception):
                    await js.delete_stream(info.config.name)
    finally:
        await nc.close()
    await _clean_inbox(token, stores)


async def _clean_inbox(token: str, stores: dict[str, str]) -> None:
    """PostgreSQL outlives the run: drop the inbox rows of this run's groups."""
    url = stores.get("postgres")
    if url is None:
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("DELETE FROM inbox WHERE grp LIKE %s", (f"{PREFIX}-{token}-%",))


# -- the suite ---------------------------------------------------------------------------


def _summary(
    broker: str, results: dict[str, list[Measured]], ns: dict[str, int], rounds: int
) -> dict[str, Any]:
    rate = {name: statistics.median(r for r, _ in values) for name, values in results.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in results.items()}
    peers = [name for name in rate if name.startswith("faststream")]
    best = max(peers, key=lambda name: rate[name])
    out: dict[str, Any] = {f"{broker}_ratio": round(rate["tidings_sqlite"] / rate[best], 3)}
    if "tidings_postgres" in rate:
        out[f"{broker}_ratio_postgres"] = round(rate["tidings_postgres"] / rate[best], 3)
    out[f"{broker}_ratio_against"] = best
    # The same comparison from CPU per event (FastStream's over Tidings', > 1: Tidings
    # spends less), which other load on the machine disturbs less than wall time.
    out[f"{broker}_cpu_ratio"] = round(cpu[best] / cpu["tidings_sqlite"], 3)
    for name in rate:
        out[f"{broker}_{name}_events_per_s"] = round(rate[name])
    for name in cpu:
        out[f"{broker}_{name}_cpu_us_per_event"] = round(cpu[name], 1)
    out[f"{broker}_events"] = ns["faststream"]
    if "tidings_postgres" in ns:
        out[f"{broker}_events_postgres"] = ns["tidings_postgres"]
    out[f"{broker}_rounds"] = rounds
    out[f"{broker}_rounds_events_per_s"] = {
        name: [round(r) for r, _ in values] for name, values in results.items()
    }
    out[f"{broker}_rounds_cpu_us_per_event"] = {
        name: [round(c, 1) for _, c in values] for name, values in results.items()
    }
    return out


def measure(brokers: Sequence[str], kafka_events: int, nats_events: int, rounds: int,
            postgres_events: int | None) -> dict[str, Any]:  # fmt: skip
    """``postgres_events``: per round for Tidings on PostgreSQL (None: no PostgreSQL side)."""
    logging.getLogger("tidings").setLevel(logging.WARNING)
    token = uuid.uuid4().hex[:8]
    result: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tidings-bench-fs-") as tmp:
        stores = {"sqlite": f"sqlite:///{tmp}/{{service}}.db"}
        if postgres_events:
            stores["postgres"] = POSTGRES
        for broker, n, rounds_of in (
            ("kafka", kafka_events, kafka_rounds),
            ("nats", nats_events, nats_rounds),
        ):
            if broker not in brokers:
                continue
            ns = {"tidings_sqlite": n, "faststream": n}
            if postgres_events:
                ns["tidings_postgres"] = postgres_events
            results = asyncio.run(rounds_of(ns, rounds, token, stores))
            result.update(_summary(broker, results, ns, rounds))
    # How busy the machine was (other work shares its cores): read the absolute numbers with it.
    result["load_average_1m_before_after"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    result["cpus"] = os.cpu_count()
    result["payload_bytes"] = PAYLOAD_BYTES
    result["wire"] = {
        "kafka_tidings": "CloudEvents binary mode (ce_* headers, JSON payload as value)",
        "kafka_faststream": "plain JSON of the model (content-type: application/json)",
        "nats_tidings": "CloudEvents structured mode (one JSON object: attributes + data)",
        "nats_faststream": "plain JSON of the model (content-type: application/json)",
    }
    result["setup"] = {
        "kafka_partitions": KAFKA_PARTITIONS,
        "nats_tidings_partitions": 1,
        "tidings_stores": {"sqlite": "a file in a temporary directory", "postgres": POSTGRES},
        "faststream_kafka": "default ack policy (ack_first: auto-commit); confluent and aiokafka clients",
        "faststream_nats": f"JetStream pull consumer, PullSub(batch_size={PULL_BATCH}), ack after handler",
        "faststream_logger": "None (no per-message access log)",
        "clock": "first event handed to the handler -> N-th handled (Tidings: unit of work committed)",
    }
    return result


def run() -> dict[str, Any]:
    """For ``python -m bench faststream``."""
    return measure(["kafka", "nats"], kafka_events=20_000, nats_events=20_000, rounds=5,
                   postgres_events=20_000)  # fmt: skip


# -- profiling ---------------------------------------------------------------------------

# Where the Tidings side's time goes, per event: (part, file path contains, function),
# cumulative time on the event-loop thread (where all the Python runs; librdkafka's and
# the consumer worker's threads are not profiled). Of several matches, the outermost.
# The runtime handles a partition's records of a batch as runs of up to ``batch_max``
# events in one unit of work (``_batch_unit``); a lone record takes the one-event path
# (``_handle_one``: seen, handler, mark_seen in its own unit of work).
PROFILE_PARTS = [
    ("process_run: all the per-event work below", "/tidings/runtime/handling.py", "process_run"),
    ("prepare: decode + dispatch + validate", "/tidings/runtime/handling.py", "_prepare"),
    ("  decode: record -> CloudEvent envelope", "/tidings/codec.py", "decode"),
    ("    of which json.loads of the payload", "/json/__init__.py", "loads"),
    ("  validate: payload -> pydantic model", "/pydantic/main.py", "model_validate"),
    ("run of events in one unit of work", "/tidings/runtime/handling.py", "_batch_unit"),
    ("  the store's BEGIN + COMMIT", "/tidings/store/", "unit_of_work"),
    ("  inbox SELECT (seen_many)", "/tidings/store/", "seen_many"),
    ("  savepoint per handler", "/tidings/store/", "savepoint"),
    ("  handler (the bench's body)", "/bench/faststream.py", "on_order"),
    ("  inbox INSERT (mark_seen_many)", "/tidings/store/", "mark_seen_many"),
    ("  observer hooks (on_handled)", "/tidings/runtime/handling.py", "_handled"),
    ("one-event path (lone records)", "/tidings/runtime/handling.py", "_handle_one"),
    ("fetch: a batch from the transport", "/tidings/transport/", "fetch"),
    ("  of which message -> Record", "/tidings/transport/", "to_record"),
    ("ack (the last of each partition per batch)", "/tidings/transport/", "ack"),
    ("idle: waiting in epoll", "~", "<method 'poll' of 'select.epoll' objects>"),
]


def profile_parts(stats: pstats.Stats, n: int) -> dict[str, float]:
    """Microseconds per event of each of ``PROFILE_PARTS``."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    for label, path, function in PROFILE_PARTS:
        found = [ct for (file, _, name), (_, _, _, ct, _) in table.items()
                 if path in file and name == function]  # fmt: skip
        parts[label] = round(max(found, default=0.0) / n * 1e6, 1)
    parts["total profiled (wall, event-loop thread)"] = round(
        stats.total_tt / n * 1e6,  # type: ignore[attr-defined]
        1,
    )
    return parts


async def _profiled(broker: str, store: str, n: int) -> tuple[float, pstats.Stats]:
    token = uuid.uuid4().hex[:8]
    events = make_events(n)
    url = KAFKA if broker == "kafka" else NATS
    stores = {"postgres": store} if store.startswith("postgresql:") else {}
    transport = await open_transport(url)
    topic = f"{PREFIX}.{token}.profile"
    profile = cProfile.Profile()
    try:
        await transport.create_topic(topic, KAFKA_PARTITIONS if broker == "kafka" else 1)
        await publish_all(transport, tidings_records(events, topic, transport.content_mode))
        group = f"{PREFIX}-{token}-profile"
        profile.enable()
        rate, _ = await run_tidings(url, store, topic, group, n, ROUND_TIMEOUT)
        profile.disable()
    finally:
        if broker == "kafka":
            await _clean_kafka(token, stores)
        else:
            await _clean_nats(token, stores)
        await transport.close()
    return rate, pstats.Stats(profile)


def profile(broker: str, store: str, n: int) -> dict[str, Any]:
    """Profile the Tidings side once; print the top entries; the per-event parts."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-fs-") as tmp:
        url = f"sqlite:///{tmp}/{{service}}.db" if store == "sqlite" else POSTGRES
        rate, stats = asyncio.run(_profiled(broker, url, n))
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(20)
    return {
        "broker": broker,
        "store": store,
        "events": n,
        "events_per_s_under_profile": round(rate),
        "us_per_event": profile_parts(stats, n),
        "note": "cProfile, event-loop thread only; profiling inflates Python-heavy parts",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=["kafka", "nats", "all"], default="all")
    parser.add_argument("--kafka-events", type=int, default=20_000)
    parser.add_argument("--nats-events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-events", type=int, default=20_000,
                        help="events per round for Tidings on PostgreSQL (0: no such side)")  # fmt: skip
    parser.add_argument("--profile", choices=["kafka", "nats"], help="profile the Tidings side")
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "postgres"],
                        help="the store of the profiled side")  # fmt: skip
    args = parser.parse_args()
    if args.profile:
        n = args.kafka_events if args.profile == "kafka" else args.nats_events
        n = args.postgres_events if args.store == "postgres" else n
        parts = profile(args.profile, args.store, n)
        print(json.dumps(parts, indent=2))
        out = RESULTS / f"faststream_profile_{args.profile}_{args.store}.json"
        out.write_text(json.dumps(parts, indent=2) + "\n")
        print(f"written to {out}")
    else:
        brokers = ["kafka", "nats"] if args.broker == "all" else [args.broker]
        result = measure(brokers, args.kafka_events, args.nats_events, args.rounds,
                         args.postgres_events or None)  # fmt: skip
        print(json.dumps(result, indent=2))
