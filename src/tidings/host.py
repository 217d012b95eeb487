"""Host one service in this process: wire it from URLs, serve its HTTP app, stop cleanly.

This is what ``tidings run MODULE:service`` does. It is the one place that turns URLs into
a transport and a store, so business code never imports either.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidings.credentials import for_service
from tidings.runtime import DEDUPE_WINDOW, Observer, Runtime
from tidings.service import Service
from tidings.store import make_store
from tidings.transport import Transport, make_transport

if TYPE_CHECKING:
    from tidings.apiguard import GuardConfig
    from tidings.registry.wire import RegistrySchemas

log = logging.getLogger("tidings.host")

DEFAULT_BROKER = "sqlite:///./.tidings/log.db"
DEFAULT_STORE = "sqlite:///./.tidings/{service}.db"


def load_object(path: str) -> Any:
    """``package.module:attribute`` -> the attribute (``:service`` is the default)."""
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute or "service")
    except AttributeError:
        raise LookupError(f"{module_name} has no attribute {attribute or 'service'!r}") from None


def load_service(path: str) -> Service:
    obj = load_object(path)
    if not isinstance(obj, Service):
        raise TypeError(f"{path} is a {type(obj).__name__}, not a tidings.Service")
    return obj


async def check_schemas(
    service: Service, registry_url: str, schema_format: str = "json"
) -> RegistrySchemas:
    """Register and check ``service``'s schemas at ``registry_url`` (see ``serve``); the
    schemas to publish and read with, holding a client to close when done."""
    from tidings.registry.client import RegistryClient
    from tidings.registry.wire import RegistrySchemas
    from tidings.schemas import SchemaType

    schema_type = SchemaType.parse(schema_format)
    client = RegistryClient(registry_url)
    try:
        schemas = await RegistrySchemas.start(service, client, schema_type)
    except BaseException:
        await client.close()
        raise
    log.info(
        "service %s: %d %s schema(s) registered at %s",
        service.name,
        len(schemas.writers),
        schema_type.value,
        registry_url,
    )
    return schemas


async def serve(
    service: Service,
    broker_url: str = DEFAULT_BROKER,
    store_url: str = DEFAULT_STORE,
    *,
    http: tuple[str, int] | None = None,
    observer: Observer | None = None,
    ready: asyncio.Event | None = None,
    registry: str | None = None,
    dedupe_window: float = DEDUPE_WINDOW,
    lanes: int = 1,
    schema_format: str = "json",
    api: GuardConfig | None = None,
    relay: str = "polling",
    connect_url: str | None = None,
) -> None:
    """Run ``service`` until SIGINT/SIGTERM (or a task fails), then stop it cleanly.

    ``relay``: who publishes the outbox, ``polling`` (the runtime's relay) or
    ``debezium`` (Debezium's outbox router on the Kafka Connect at ``connect_url``; see
    :mod:`tidings.cdc.outbox`).

    ``dedupe_window``: seconds the inbox keeps a handled event's id; ``lanes``: units of
    work one fetch runs at once (see :mod:`tidings.runtime`).

    With a ``registry`` URL, the service's schemas are registered and checked first
    (:func:`tidings.registry.startup.ensure_schemas`); one that breaks its subject's rule
    stops the start with a :class:`SchemaRejected` naming subject, rule and field. What
    it publishes is then written with those schemas (``schema_format``: ``json``, or
    ``avro`` in Confluent's framing, which needs a binary-mode transport), and what it
    reads is checked against the schema each record names (``tidings.registry.wire``).

    ``api``: who may call the HTTP app and how often (:mod:`tidings.apiguard`); its
    security headers are always on. Its key files are read before anything connects.
    """
    protect = None
    if http and service.http_app is not None:
        from tidings.apiguard import guard  # the HTTP stack: imported by a service that serves

        protect = guard(api)  # first, so a bad key file fails the start before anything connects
    # {service} in the URL: each service its own broker user (tidings.credentials).
    broker_url = for_service(broker_url, service.group)
    transport = make_transport(broker_url)
    if registry and schema_format.lower() == "avro" and transport.content_mode != "binary":
        raise ValueError(
            f"--schema-format avro needs a broker that carries CloudEvents in binary mode "
            f"(ce_ headers, as Kafka and the SQLite log do); {broker_url} uses "
            f"{transport.content_mode} mode: use --schema-format json"
        )
    schemas = await check_schemas(service, registry, schema_format) if registry else None
    try:
        await _serve(
            service,
            transport,
            store_url,
            broker_url,
            (http, protect) if http and protect else None,
            observer,
            ready,
            schemas,
            {
                "dedupe_window": dedupe_window,
                "lanes": lanes,
                "relay": relay,
                "connect_url": connect_url,
            },
        )
    finally:
        if schemas is not None:
            await schemas.client.close()


async def _serve(
    service: Service,
    transport: Transport,
    store_url: str,
    broker_url: str,
    http: tuple[tuple[str, int], Callable[[Any], Any]] | None,
    observer: Observer | None,
    ready: asyncio.Event | None,
    schemas: RegistrySchemas | None,
    options: dict[str, Any],
) -> None:
    """``serve`` once the options are checked; ``http``: the address and the guard;
    ``options``: the Runtime's keyword arguments (inbox window, lanes, relay)."""
    store = make_store(store_url, service.name)
    await transport.connect()
    try:
        await store.connect()
        runtime = Runtime(
            service,
            transport,
            store,
            observer=observer,
            schemas=schemas,
            **options,
        )
        await runtime.start()
        watcher = asyncio.create_task(runtime.observer.run(runtime), name="observe")
        server = None
        server_task: asyncio.Task[None] | None = None
        if http is not None:
            address, protect = http
            import uvicorn

            from tidings.http import with_units  # FastAPI: imported by a service that serves

            # The guard is outermost: a refused request opens no span and no unit of work.
            app = protect(runtime.observer.wrap_http_app(service.http_app))
            app = with_units(app, runtime.unit_of_work)
            # log_config=None: uvicorn's loggers go through the process's one logging setup.
            config = uvicorn.Config(
                app,
                host=address[0],
                port=address[1],
                log_level="warning",
                lifespan="off",
                access_log=False,
                log_config=None,
                server_header=False,
            )
            server = uvicorn.Server(config)
            # This process owns SIGINT/SIGTERM (to stop the runtime too), not uvicorn.
            server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
            server_task = asyncio.create_task(server.serve())
            # Ready means accepting requests; uvicorn offers a flag for that, not an event.
            while not server.started and not server_task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if server_task.done():
                server_task.result()  # e.g. the port is taken: raise that
                raise OSError(f"HTTP server on {http[0]}:{http[1]} stopped at start-up")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "service %s running (broker %s, store %s, inbox dedupe window %ss, %d lane(s))",
            service.name,
            broker_url,
            store.url,
            f"{runtime.dedupe_window:g}",
            runtime.lanes,
        )
        if ready is not None:
            ready.set()
        stopper = asyncio.ensure_future(stop.wait())
        waiter = asyncio.ensure_future(runtime.wait())
        try:
            await asyncio.wait([stopper, waiter], return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                waiter.result()  # a task failed: re-raise after cleaning up below
        finally:
            for task in (stopper, waiter, watcher):
                task.cancel()
            if server is not None and server_task is not None:
                server.should_exit = True
                with contextlib.suppress(asyncio.CancelledError):
                    await server_task
            await runtime.stop()
            runtime.observer.close()
            await store.close()
    finally:
        await transport.close()
