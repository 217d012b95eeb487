"""``tidings``: run services, the demo, and look into topics, lag and dead letters."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from tidings.cli.asyncapi import asyncapi
from tidings.cli.common import (
    BROKER_HELP,
    STORE_HELP,
    console,
    fail,
    load_services,
    opened_transport,
    run_async,
)
from tidings.cli.contracts import contracts_app
from tidings.cli.dashboard import dashboard
from tidings.cli.new import new
from tidings.cli.publish import publish
from tidings.cli.registry import registry_app
from tidings.cli.schema import schema_app
from tidings.cli.tail import tail
from tidings.cli.trace import trace
from tidings.host import DEFAULT_BROKER, DEFAULT_STORE, serve
from tidings.observability import TelemetryConfig, configure, setup_logging
from tidings.reliability.deadletter import DeadLetter, dlq_topic, read_dead_letters

app = typer.Typer(
    help="Tidings: event-driven microservices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dlq = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")


@app.callback()
def _one_logging_setup() -> None:
    # Every command logs through the same setup (TIDINGS_LOG_FORMAT, TIDINGS_LOG_LEVEL);
    # `run` sets it up again with its service's name.
    try:
        setup_logging()
    except ValueError as exc:
        raise fail(str(exc)) from None


Broker = typer.Option(DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP)


@app.command()
def run(
    target: str = typer.Argument(..., help="The service, as package.module:attribute"),
    broker: str = Broker,
    store: str = typer.Option(
        DEFAULT_STORE, "--store", "-s", envvar="TIDINGS_STORE", help=STORE_HELP
    ),
    http: str = typer.Option("", help="Serve the service's HTTP app on HOST:PORT"),
    ready_file: Path | None = typer.Option(None, help="Touch this file once the service runs"),
    traces: str = typer.Option(
        "off",
        envvar="TIDINGS_TRACES",
        help="Export spans: otlp, otlp:URL, otlp-proto, console, file:PATH or off",
    ),
    metrics_port: int | None = typer.Option(
        None,
        envvar="TIDINGS_METRICS_PORT",
        help="Serve Prometheus /metrics on this port (0: any free port)",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", envvar="TIDINGS_METRICS_HOST", help="Address of the metrics endpoint"
    ),
    log_format: str = typer.Option(
        "text", envvar="TIDINGS_LOG_FORMAT", help="Logs as text or json (JSON lines)"
    ),
    registry: str = typer.Option(
        "",
        envvar="TIDINGS_REGISTRY",
        help="Schema registry URL: register what the service publishes, check what it "
        "handles, refuse to start on a breaking change",
    ),
) -> None:
    """Run one service until Ctrl-C or SIGTERM.

    TARGET is imported with the current directory on the module path (as uvicorn does),
    so `tidings run greet:service` finds greet.py here.
    """
    address = None
    if http:
        host, _, port = http.rpartition(":")
        if not port.isdigit():
            raise fail(f"--http {http!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
        address = (host or "127.0.0.1", int(port))

    @run_async
    async def main() -> None:
        [service] = load_services([target])
        setup_logging(log_format, service=service.name, with_trace_ids=traces != "off")
        config = TelemetryConfig.from_env()
        config = TelemetryConfig(traces, metrics_port, metrics_host, config.metrics_interval)
        try:
            observer = configure(service.name, config, broker_url=broker)
        except OSError as exc:
            raise ValueError(f"metrics endpoint {metrics_host}:{metrics_port}: {exc}") from None
        if observer.metrics is not None:
            console.print(
                f"{service.name}: metrics on http://{metrics_host}:{observer.metrics.port}/metrics",
                highlight=False,
            )
        ready = asyncio.Event()

        async def announce() -> None:
            await ready.wait()
            if ready_file is not None:
                ready_file.write_text(str(os.getpid()))  # noqa: ASYNC240 - a few bytes, once

        announcer = asyncio.create_task(announce())
        try:
            await serve(
                service,
                broker,
                store,
                http=address,
                observer=observer,
                ready=ready,
                registry=registry or None,
            )
        finally:
            announcer.cancel()

    main()


@app.command()
def demo(
    target: str = typer.Argument(
        "",
        metavar="APP",
        help="The app's demo, as package.module:function "
        "(default: shop.demo:main, the reference shop's)",
        show_default=False,
    ),
    orders: int = typer.Option(50, "--orders", "-n", min=1, max=100_000, help="How many orders"),
    broker: str = typer.Option(
        "", "--broker", "-b", help=BROKER_HELP + " (default: a fresh SQLite log)"
    ),
    store: str = typer.Option(
        "", "--store", "-s", help=STORE_HELP + " (default: fresh SQLite files)"
    ),
    port: int = typer.Option(0, help="HTTP port of the order service (0: any free port)"),
    concurrency: int = typer.Option(16, help="Orders in flight at once"),
    timeout: float = typer.Option(120.0, help="Seconds to wait for every order to settle"),
    seed: str = typer.Option("tidings", help="Seed of the order mix and the payment simulator"),
    dashboard: bool = typer.Option(
        False,
        "--dashboard",
        help="Serve and open the web dashboard; keep the shop running until Ctrl-C",
    ),
    dashboard_port: int = typer.Option(8050, help="Port of the dashboard"),
    open_browser: bool = typer.Option(
        True, "--open/--no-open", help="Open the dashboard in a browser"
    ),
    traces: str = typer.Option(
        "", help="Tracing of the services: otlp, otlp:URL, console, file:PATH"
    ),
    metrics: bool = typer.Option(False, "--metrics", help="Serve Prometheus metrics per service"),
) -> None:
    """Run an app's demo; by default the shop (order, inventory, billing) as processes,
    orders placed over HTTP, invariants checked."""
    from tidings.cli.demo import demo_options, load_demo

    try:
        entry = load_demo(target)
    except (LookupError, TypeError) as exc:
        raise fail(str(exc)) from None
    ok = entry(
        demo_options(
            broker,
            store,
            orders=orders,
            port=port,
            concurrency=concurrency,
            timeout=timeout,
            seed=seed,
            dashboard=dashboard,
            dashboard_port=dashboard_port,
            open_browser=open_browser,
            traces=traces,
            metrics=metrics,
        )
    )
    raise typer.Exit(0 if ok else 1)


@app.command()
def topics(broker: str = Broker) -> None:
    """Topics with their partitions and end offsets."""

    @run_async
    async def main() -> None:
        async with opened_transport(broker) as transport:
            infos = await transport.topics()
        table = Table("topic", "partitions", "end offsets", "records")
        for info in infos:
            if not transport.capabilities.offsets:  # a queue broker: no log positions
                table.add_row(info.name, str(info.partitions), "-", "-")
                continue
            offsets = " ".join(f"{p}:{o}" for p, o in sorted(info.end_offsets.items()))
            table.add_row(
                info.name, str(info.partitions), offsets, str(sum(info.end_offsets.values()))
            )
        console.print(table)
        if not transport.capabilities.offsets:
            console.print(f"end offsets are not supported on {transport.platform} (queues)")

    main()


@app.command()
def lag(
    broker: str = Broker, group: str = typer.Option("", help="Only this consumer group")
) -> None:
    """Consumer lag per group and partition (end offset minus committed offset; on a
    broker without offsets, such as RabbitMQ, the records waiting in each queue)."""

    @run_async
    async def main() -> None:
        async with opened_transport(broker) as transport:
            if not transport.capabilities.offsets:
                table = Table("group", "topic", "partition", "waiting")
                for name in await transport.groups():
                    if group and name != group:
                        continue
                    for (topic, partition), count in sorted((await transport.queued(name)).items()):
                        table.add_row(name, topic, str(partition), str(count))
                console.print(table)
                console.print(f"lag on {transport.platform}: messages waiting in each queue")
                return
            ends = {
                (t.name, p): o for t in await transport.topics() for p, o in t.end_offsets.items()
            }
            table = Table("group", "topic", "partition", "committed", "end", "lag")
            for name in await transport.groups():
                if group and name != group:
                    continue
                for (topic, partition), offset in sorted((await transport.committed(name)).items()):
                    end = ends.get((topic, partition), offset)
                    table.add_row(
                        name, topic, str(partition), str(offset), str(end), str(end - offset)
                    )
        console.print(table)

    main()


async def _dead_letters(broker: str, group: str) -> list[DeadLetter]:
    async with opened_transport(broker, needs="tidings dlq:offsets") as transport:
        return await read_dead_letters(transport, group)


def _letter_id(letter: DeadLetter) -> str:
    return f"{letter.record.partition}:{letter.record.offset}"


@dlq.command("list")
def dlq_list(
    group: str = typer.Argument(..., help="Consumer group (the service name)"), broker: str = Broker
) -> None:
    """The dead letters of a consumer group."""
    letters = run_async(_dead_letters)(broker, group)
    table = Table("id", "failed at", "type", "event id", "from", "attempts", "reason")
    for d in letters:
        when = datetime.fromtimestamp(d.failed_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            _letter_id(d),
            when,
            d.event_type or "?",
            d.event_id or "?",
            f"{d.topic}/{d.partition}@{d.offset}",
            str(d.attempts),
            d.reason,
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s) in {dlq_topic(group)}")


def _find(letters: list[DeadLetter], letter_id: str) -> DeadLetter:
    for d in letters:
        if letter_id in (_letter_id(d), d.event_id):
            return d
    raise fail(f"no dead letter {letter_id!r}; `tidings dlq list GROUP` shows their ids")


@dlq.command("show")
def dlq_show(
    group: str,
    letter_id: str = typer.Argument(..., help="partition:offset or event id"),
    broker: str = Broker,
) -> None:
    """One dead letter: its error, traceback, coordinates and payload."""
    d = _find(run_async(_dead_letters)(broker, group), letter_id)
    console.print(f"[bold]{d.event_type}[/] {d.event_id}  from {d.topic}/{d.partition}@{d.offset}")
    console.print(f"reason:   {d.reason}\nerror:    {d.error}\nattempts: {d.attempts}")
    if d.traceback:
        console.print(d.traceback, markup=False, highlight=False)
    console.print("headers: " + json.dumps(d.original_headers, indent=2))
    console.print("payload: " + d.record.value.decode(errors="replace"), markup=False)


@dlq.command("replay")
def dlq_replay(
    group: str,
    letter_ids: list[str] = typer.Argument(None, help="partition:offset or event id"),
    all_: bool = typer.Option(False, "--all", help="Replay every dead letter"),
    broker: str = Broker,
) -> None:
    """Send dead letters back to their group (only that group sees them again)."""
    letters = run_async(_dead_letters)(broker, group)
    if all_:
        chosen = letters
    elif letter_ids:
        chosen = [_find(letters, i) for i in letter_ids]
    else:
        raise fail("name dead letters to replay (see `tidings dlq list`), or pass --all")

    @run_async
    async def main() -> None:
        async with opened_transport(broker) as transport:
            await transport.publish([d.replay_record() for d in chosen])

    main()
    console.print(f"replayed {len(chosen)} dead letter(s) to {group}")


# Commands that live in their own modules.
app.command()(trace)
app.command()(dashboard)
app.command()(publish)
app.command()(tail)
app.command()(new)
app.add_typer(registry_app, name="registry")
app.add_typer(schema_app, name="schema")
app.add_typer(contracts_app, name="contracts")
app.command()(asyncapi)
