"""Encoding and decoding an OrderPlaced: JSON and Avro with a registry, against pydantic.

One event (src/shop/events.py's OrderPlaced, three lines) goes ``--events`` times through
what a service does with it, in this process, in each of these modes:

* ``pydantic``: ``model_dump_json`` then ``model_validate_json``: the baseline, no
  envelope, no schema;
* ``plain``: Tidings without a registry: ``new_envelope`` (the CloudEvents attributes, a
  UUIDv7 id), ``codec.encode`` (binary mode, JSON value), then ``codec.decode`` and
  ``model_validate``;
* ``json``: the same with a registry: ``dataschema`` at the registry, and the payload
  validated against the registered JSON Schema on read (jsonschema);
* ``avro``: with a registry, Avro in Confluent's framing (fastavro), decoded with the
  writer's schema.

With a registry, the writer's ids come from start-up (``RegistrySchemas.start``) and the
reader fetches the writer's schema on the first record, as a consumer does (the same
``UnknownSchema`` -> ``reader()`` -> decode again step as ``runtime/handling.py``). The
embedded registry runs over HTTP in a thread and counts the requests it serves: the
steady run (after ``--warmup`` events) must make none. Each mode runs ``--rounds`` times
in rotating order; the best round counts (least disturbed by other load).

    python -m bench.serialization [--events 10000] [--rounds 3]

Writes bench/results/serialization.json: events/s per mode (of wall time, and of this
process's CPU time, which other load on the machine disturbs less), each mode's ratio to
``pydantic`` by both, the value's size in bytes, and the registry calls of the warm-up and
of the steady run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from shop.events import OrderLine, OrderPlaced
from tidings import Service, codec
from tidings.messages import new_envelope, published_topic
from tidings.records import Record
from tidings.registry.client import RegistryClient
from tidings.registry.server import make_app
from tidings.registry.storage import RegistryStorage
from tidings.registry.wire import RegistrySchemas
from tidings.schemas import SchemaType, subject_for
from tidings.testing import free_port
from tidings.units import encode

RESULTS = Path(__file__).with_name("results") / "serialization.json"
TOPIC = published_topic(OrderPlaced)
EVENT = OrderPlaced(
    order_id="order-0001",
    customer_id="customer-42",
    lines=[OrderLine(sku=f"sku-{i}", quantity=i + 1) for i in range(3)],
    amount_cents=12_345,
)
Step = Callable[[], Awaitable[int]]  # one encode + decode; returns the value's size


class CountingRegistry:
    """The embedded registry over HTTP in a thread, counting the requests it serves."""

    def __init__(self, directory: str) -> None:
        self.storage = RegistryStorage(f"sqlite:///{directory}/registry.db")
        self.app = make_app(self.storage)
        self.requests = 0
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(
            self._counted, host="127.0.0.1", port=port, log_level="warning", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _counted(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)

    def __enter__(self) -> CountingRegistry:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.storage.close()


def pydantic_step() -> Step:
    async def step() -> int:
        text = EVENT.model_dump_json()
        OrderPlaced.model_validate_json(text)
        return len(text)

    return step


def tidings_step(writer: RegistrySchemas | None, reader: RegistrySchemas | None) -> Step:
    async def step() -> int:
        envelope = new_envelope(EVENT, source="bench")
        out = encode(envelope, TOPIC, "binary", writer)
        record = Record(TOPIC, 0, 0, out.key, out.value, out.headers, 0.0)
        if reader is None:
            back = codec.decode(record)
        else:
            try:
                back = codec.decode(record, reader.known)
            except codec.UnknownSchema as missing:  # the first record: fetch, as a consumer
                await reader.reader(missing.schema_id)
                back = codec.decode(record, reader.known)
        OrderPlaced.model_validate(back.data)
        return len(out.value)

    return step


async def timed(step: Step, events: int) -> tuple[float, float, int]:
    """Events per second of wall time and of this process's CPU time, and the value size."""
    started, cpu = time.perf_counter(), time.process_time()
    size = 0
    for _ in range(events):
        size = await step()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return events / wall, events / max(cpu, 1e-9), size


async def measure(events: int, rounds: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory, CountingRegistry(directory) as registry:
        async with httpx.AsyncClient(base_url=registry.url) as http:
            # One subject, both schema types: the rule must let the type change.
            await http.put(f"/config/{subject_for(OrderPlaced)}", json={"compatibility": "NONE"})
        producer = Service("bench-serialization", publishes=[OrderPlaced])
        consumer = Service("bench-serialization-reader")
        clients: list[RegistryClient] = []
        sides: dict[str, tuple[RegistrySchemas, RegistrySchemas]] = {}
        for kind in (SchemaType.JSON, SchemaType.AVRO):
            clients += [RegistryClient(registry.url), RegistryClient(registry.url)]
            writer = await RegistrySchemas.start(producer, clients[-2], kind)
            reader = await RegistrySchemas.start(consumer, clients[-1], kind)
            sides[kind.value.lower()] = (writer, reader)
        steps: dict[str, Step] = {
            "pydantic": pydantic_step(),
            "plain": tidings_step(None, None),
            "json": tidings_step(*sides["json"]),
            "avro": tidings_step(*sides["avro"]),
        }
        before_warmup = registry.requests
        for step in steps.values():
            await timed(step, warmup)
        warmup_calls = registry.requests - before_warmup
        before = registry.requests
        best: dict[str, float] = dict.fromkeys(steps, 0.0)
        best_cpu: dict[str, float] = dict.fromkeys(steps, 0.0)
        sizes: dict[str, int] = {}
        names = list(steps)
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                rate, cpu_rate, sizes[name] = await timed(steps[name], events)
                best[name] = max(best[name], rate)
                best_cpu[name] = max(best_cpu[name], cpu_rate)
        steady_calls = registry.requests - before
        for client in clients:
            await client.close()
    base, base_cpu = best["pydantic"], best_cpu["pydantic"]
    out: dict[str, Any] = {"events": events, "rounds": rounds}
    for name in steps:
        out[f"{name}_events_per_s"] = round(best[name])
        out[f"{name}_events_per_cpu_s"] = round(best_cpu[name])
        if name != "pydantic":
            out[f"{name}_ratio_to_pydantic"] = round(best[name] / base, 3)
            out[f"{name}_cpu_ratio_to_pydantic"] = round(best_cpu[name] / base_cpu, 3)
        out[f"{name}_value_bytes"] = sizes[name]
    out["registry_calls_warmup"] = warmup_calls
    out["registry_calls_steady"] = steady_calls
    return out


def run(events: int = 10_000, rounds: int = 3, warmup: int = 100) -> dict[str, Any]:
    return asyncio.run(measure(events, rounds, warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    result = run(args.events, args.rounds, args.warmup)
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"  {key:34s} {value}")


if __name__ == "__main__":
    main()
