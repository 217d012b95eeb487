"""``tidings dashboard``: the web dashboard over a broker, on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import typer

from tidings.cli.common import BROKER_HELP, console, fail, load_services
from tidings.host import DEFAULT_BROKER
from tidings.observability import setup_logging


def dashboard(
    broker: str = typer.Option(
        DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP
    ),
    port: int = typer.Option(8050, help="HTTP port"),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on (keep it loopback: "
        "the dashboard has no login, and can replay dead letters)",
    ),
    open_browser: bool = typer.Option(False, "--open", help="Open it in a web browser"),
    ready_file: Path | None = typer.Option(None, help="Write this file once it serves"),
    service: list[str] = typer.Option(
        [],
        "--service",
        help="A service as MODULE:service, repeatable: serves their AsyncAPI document "
        "at /asyncapi (a page) and /asyncapi.json",
    ),
) -> None:
    """Live events, order timelines, consumer lag, dead letters (with replay) and topics."""
    from tidings.dashboard import create_app, serve

    setup_logging(service="dashboard")
    try:
        services = load_services(service)
        create_app(broker, services=services)  # a bad service or document fails here, in one line
    except (LookupError, TypeError, ValueError) as exc:
        raise fail(str(exc)) from None
    url = f"http://{host}:{port}/"
    console.print(
        f"Tidings dashboard on [link={url}]{url}[/link] (broker {broker}); Ctrl-C stops it",
        highlight=False,
    )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    serve(broker, host, port, ready_file=ready_file, services=services)
