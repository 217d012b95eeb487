"""``tidings registry serve``: the embedded schema registry (Confluent's REST API)."""

from __future__ import annotations

from pathlib import Path

import typer

from tidings.cli.common import console, fail
from tidings.credentials import redact
from tidings.observability import setup_logging

DEFAULT_REGISTRY_STORE = "sqlite:///./.tidings/registry.db"

registry_app = typer.Typer(help="The embedded schema registry.", no_args_is_help=True)


@registry_app.command("serve")
def serve(
    store: str = typer.Option(
        DEFAULT_REGISTRY_STORE,
        "--store",
        "-s",
        help="Where schemas are kept: sqlite:///./registry.db or postgresql://host/db",
    ),
    port: int = typer.Option(8081, help="HTTP port (8081, as Confluent's registry)"),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on (keep it loopback: there is no login)"
    ),
    ready_file: Path | None = typer.Option(None, help="Write this file once it serves"),
) -> None:
    """Serve a schema registry speaking Confluent's REST API, for development and tests."""
    from tidings.registry.server import serve as serve_registry
    from tidings.registry.storage import StorageUnavailable

    setup_logging(service="registry")

    console.print(
        f"schema registry on http://{host}:{port} (store {redact(store)}); Ctrl-C stops it",
        highlight=False,
    )
    try:
        serve_registry(store, host, port, ready_file=ready_file)
    except (StorageUnavailable, ValueError) as exc:
        raise fail(str(exc)) from None
