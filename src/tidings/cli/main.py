"""``tidings``: run services and the demo; every other command lives in a module of its own."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

from tidings.apiguard import GuardConfig
from tidings.cli.acl import acl_app
from tidings.cli.apikey import apikey_app
from tidings.cli.asyncapi import asyncapi
from tidings.cli.cdc import cdc_app
from tidings.cli.common import (
    BROKER_HELP,
    STORE_HELP,
    Broker,
    console,
    fail,
    load_services,
    parse_duration,
    run_async,
)
from tidings.cli.contracts import contracts_app
from tidings.cli.dashboard import dashboard
from tidings.cli.dlq import dlq_app
from tidings.cli.history import history
from tidings.cli.lag import lag, topics
from tidings.cli.new import new
from tidings.cli.projection import projection_app
from tidings.cli.publish import publish
from tidings.cli.registry import registry_app
from tidings.cli.saga import saga_app
from tidings.cli.schema import schema_app
from tidings.cli.tail import tail
from tidings.cli.trace import trace
from tidings.host import DEFAULT_STORE, serve
from tidings.observability import TelemetryConfig, configure, setup_logging
from tidings.reliability.debezium import RELAYS

app = typer.Typer(
    help="Tidings: event-driven microservices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _one_logging_setup() -> None:
    # Every command logs through the same setup (TIDINGS_LOG_FORMAT, TIDINGS_LOG_LEVEL);
    # `run` sets it up again with its service's name.
    try:
        setup_logging()
    except ValueError as exc:
        raise fail(str(exc)) from None


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


# Commands that live in their own modules.
app.command()(topics)
app.command()(lag)
app.add_typer(dlq_app, name="dlq")
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
