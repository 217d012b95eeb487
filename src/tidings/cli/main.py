"""``tidings``: run services, the demo, and look into topics, lag and dead letters."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from tidings.apiguard import GuardConfig
from tidings.cli.acl import acl_app
from tidings.cli.apikey import apikey_app
from tidings.cli.asyncapi import asyncapi
from tidings.cli.cdc import cdc_app, report_connectors
from tidings.cli.common import (
    BROKER_HELP,
    STORE_HELP,
    console,
    fail,
    load_services,
    opened_transport,
    parse_duration,
    parse_since,
    run_async,
)
from tidings.cli.contracts import contracts_app
from tidings.cli.dashboard import dashboard
from tidings.cli.history import history
from tidings.cli.new import new
from tidings.cli.projection import projection_app
from tidings.cli.publish import publish
from tidings.cli.registry import registry_app
from tidings.cli.saga import saga_app
from tidings.cli.schema import schema_app
from tidings.cli.tail import tail
from tidings.cli.trace import trace
from tidings.host import DEFAULT_BROKER, DEFAULT_STORE, serve
from tidings.observability import TelemetryConfig, configure, setup_logging
from tidings.reliability.deadletter import DeadLetter, dlq_topic, read_dead_letters
from tidings.reliability.debezium import RELAYS

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
    dedupe_window: str = typer.Option(
        "7d",
        envvar="TIDINGS_DEDUPE_WINDOW",
        help="How long the inbox remembers a handled event (30m, 12h, 7d): a copy "
        "redelivered later is handled again. Keep it at least the topics' retention",
    ),
    lanes: int = typer.Option(
        1,
        min=1,
        envvar="TIDINGS_LANES",
        help="Units of work one fetch runs at once, partitions dealt among them (1: one "
        "transaction for the whole fetch; more for handlers that wait on slow calls)",
    ),
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
        "handles, refuse to start on a breaking change; publish with the registered "
        "schemas and validate what it reads against them",
    ),
    schema_format: str = typer.Option(
        "json",
        envvar="TIDINGS_SCHEMA_FORMAT",
        help="With --registry: json (CloudEvents JSON, dataschema at the registry) or avro "
        "(Confluent's framing: magic byte, schema id, Avro body; needs Kafka or the SQLite log)",
    ),
    api_keys: Path | None = typer.Option(
        None,
        envvar="TIDINGS_API_KEYS",
        help="HTTP API: require an X-API-Key from this file of CLIENT:sha256:HEX lines "
        "(`tidings apikey new CLIENT` makes one)",
    ),
    jwt_issuer: str = typer.Option(
        "", envvar="TIDINGS_JWT_ISSUER", help="HTTP API: accept bearer JWTs from this issuer"
    ),
    jwt_audience: str = typer.Option(
        "", envvar="TIDINGS_JWT_AUDIENCE", help="HTTP API: ...whose aud is this"
    ),
    jwt_key_file: Path | None = typer.Option(
        None,
        envvar="TIDINGS_JWT_KEY_FILE",
        help="HTTP API: ...signed by this key (PEM public key, JWK Set, or HS256 secret)",
    ),
    rate_limit: str = typer.Option(
        "",
        envvar="TIDINGS_RATE_LIMIT",
        help="HTTP API: per-client limit, e.g. 20/second or 10/second;300/minute (429 past it)",
    ),
    cors_origin: list[str] = typer.Option(
        [], help="HTTP API: allow this browser origin (repeatable; none by default)"
    ),
    relay: str = typer.Option(
        "polling",
        envvar="TIDINGS_RELAY",
        help="Who publishes the outbox: polling (this process) or debezium (Debezium's "
        "outbox router on Kafka Connect; needs a postgresql:// store and Kafka)",
    ),
    connect_url: str = typer.Option(
        "http://127.0.0.1:8083",
        "--connect",
        envvar="TIDINGS_CONNECT_URL",
        help="With --relay debezium: Kafka Connect's REST API",
    ),
) -> None:
    """Run one service until Ctrl-C or SIGTERM.

    TARGET is imported with the current directory on the module path (as uvicorn does),
    so `tidings run greet:service` finds greet.py here.
    """
    try:
        window = parse_duration(dedupe_window, "--dedupe-window")
    except ValueError as exc:
        raise fail(str(exc)) from None
    if schema_format.lower() not in ("json", "avro"):
        raise fail(f"--schema-format {schema_format!r}: expected json or avro")
    if relay not in RELAYS:
        raise fail(f"--relay {relay!r}: expected {' or '.join(RELAYS)}")
    address = None
    if http:
        host, _, port = http.rpartition(":")
        if not port.isdigit():
            raise fail(f"--http {http!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
        address = (host or "127.0.0.1", int(port))
    api = GuardConfig(
        api_keys=api_keys,
        jwt_issuer=jwt_issuer,
        jwt_audience=jwt_audience,
        jwt_key_file=jwt_key_file,
        rate_limit=rate_limit,
        cors_origins=tuple(cors_origin),
    )

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
                dedupe_window=window,
                lanes=lanes,
                schema_format=schema_format,
                api=api,
                relay=relay,
                connect_url=connect_url,
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
    saga: str = typer.Option(
        "choreography",
        "--saga",
        help="choreography (services react to events) or orchestration (a saga sends commands)",
    ),
    relay: str = typer.Option(
        "polling",
        "--relay",
        help="Who publishes the outbox: polling or debezium for every service, or "
        "SERVICE=debezium,... (Debezium needs Kafka, PostgreSQL and Kafka Connect)",
    ),
) -> None:
    """Run an app's demo; by default the shop (order, inventory, billing) as processes,
    orders placed over HTTP, invariants checked."""
    from tidings.cli.demo import demo_options, load_demo
    from tidings.demo import relays

    try:
        entry = load_demo(target)
    except (LookupError, TypeError) as exc:
        raise fail(str(exc)) from None
    try:
        relays(relay, [])  # the relay names now; the services' in the app's demo
    except ValueError as exc:
        if "=" not in relay:
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
            saga=saga,
            relay=relay,
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
    broker: str = Broker,
    group: str = typer.Option("", help="Only this consumer group"),
    connect_url: str = typer.Option(
        "",
        "--connect",
        envvar="TIDINGS_CONNECT_URL",
        help="Also Kafka Connect's connectors (change data capture): exit 1 if one failed",
    ),
) -> None:
    """Consumer lag per group and partition (end offset minus committed offset; on a
    broker without offsets, such as RabbitMQ, the records waiting in each queue). A failed
    Debezium connector lags for ever without a record to show it, so ``--connect`` lists
    the connectors' states too."""

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
    if connect_url and report_connectors(connect_url):
        raise typer.Exit(1)


DLQ_WINDOW = "7d"  # dead letters wait for people: a week (Kafka's default retention)
Since = typer.Option(
    DLQ_WINDOW, "--since", help="Dead letters stored this long ago and later (2h, 30d), or all"
)


async def _dead_letters(broker: str, group: str, since: str) -> list[DeadLetter]:
    start = parse_since(since)
    async with opened_transport(broker, needs="tidings dlq:offsets") as transport:
        return await read_dead_letters(transport, group, start)


def _letter_id(letter: DeadLetter) -> str:
    return f"{letter.record.partition}:{letter.record.offset}"


@dlq.command("list")
def dlq_list(
    group: str = typer.Argument(..., help="Consumer group (the service name)"),
    broker: str = Broker,
    since: str = Since,
) -> None:
    """The dead letters of a consumer group, of the last week unless --since says otherwise."""
    letters = run_async(_dead_letters)(broker, group, since)
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
    window = "" if since.strip().lower() == "all" else f" stored in the last {since}"
    console.print(f"{len(letters)} dead letter(s) in {dlq_topic(group)}{window}")


def _find(letters: list[DeadLetter], letter_id: str) -> DeadLetter:
    for d in letters:
        if letter_id in (_letter_id(d), d.event_id):
            return d
    raise fail(
        f"no dead letter {letter_id!r} in the window read (--since, {DLQ_WINDOW} by default; "
        "--since all reads every one kept); `tidings dlq list GROUP` shows their ids"
    )


@dlq.command("show")
def dlq_show(
    group: str,
    letter_id: str = typer.Argument(..., help="partition:offset or event id"),
    broker: str = Broker,
    since: str = Since,
) -> None:
    """One dead letter: its error, traceback, coordinates and payload."""
    d = _find(run_async(_dead_letters)(broker, group, since), letter_id)
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
    all_: bool = typer.Option(False, "--all", help="Replay every dead letter (of --since)"),
    broker: str = Broker,
    since: str = Since,
) -> None:
    """Send dead letters back to their group (only that group sees them again)."""
    letters = run_async(_dead_letters)(broker, group, since)
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
app.command()(history)
app.command()(dashboard)
app.command()(publish)
app.command()(tail)
app.command()(new)
app.add_typer(registry_app, name="registry")
app.add_typer(schema_app, name="schema")
app.add_typer(contracts_app, name="contracts")
app.add_typer(apikey_app, name="apikey")
app.add_typer(acl_app, name="acl")
app.add_typer(projection_app, name="projection")
app.add_typer(cdc_app, name="cdc")
app.add_typer(saga_app, name="saga")
app.command()(asyncapi)
