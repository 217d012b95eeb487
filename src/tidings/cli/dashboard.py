"""``tidings dashboard``: the web dashboard over a broker, on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from tidings.cli.common import BROKER_HELP, console, fail, load_services
from tidings.credentials import redact
from tidings.host import DEFAULT_BROKER
from tidings.observability import setup_logging


def dashboard(
    broker: str = typer.Option(
        DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP
    ),
    port: int = typer.Option(8050, help="HTTP port"),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on; anything but loopback needs a token "
        "(the dashboard shows every event and can replay dead letters)",
    ),
    token_file: Path | None = typer.Option(
        None,
        envvar="TIDINGS_DASHBOARD_TOKEN_FILE",
        help="Require this file's token (a login page sets a cookie; scripts send "
        "Authorization: Bearer); TIDINGS_DASHBOARD_TOKEN gives the token itself",
    ),
    open_browser: bool = typer.Option(False, "--open", help="Open it in a web browser"),
    ready_file: Path | None = typer.Option(None, help="Write this file once it serves"),
    service: list[str] = typer.Option(
        [],
        "--service",
        help="A service as MODULE:service, repeatable: serves their AsyncAPI document "
        "at /asyncapi (a page) and /asyncapi.json",
    ),
    store: str = typer.Option(
        "",
        "--store",
        "-s",
        help="The services' store URL: a timeline then shows the state of their sagas",
    ),
) -> None:
    """Live events, order timelines, consumer lag, dead letters (with replay) and topics."""
    from tidings.dashboard import create_app, serve
    from tidings.dashboard.login import is_loopback

    setup_logging(service="dashboard")
    try:
        token = _token(token_file)
        if not is_loopback(host) and not token:
            raise ValueError(
                f"the dashboard refuses to listen on {host} without a token: give "
                "--token-file FILE or TIDINGS_DASHBOARD_TOKEN, or listen on 127.0.0.1"
            )
        services = load_services(service)
        # a bad service, document or token fails here, in one line
        create_app(broker, services=services, token=token)
    except (LookupError, TypeError, ValueError) as exc:
        raise fail(str(exc)) from None
    url = f"http://{host}:{port}/"
    console.print(
        f"Tidings dashboard on [link={url}]{url}[/link] (broker {redact(broker)}); Ctrl-C stops it",
        highlight=False,
    )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    serve(
        broker,
        host,
        port,
        ready_file=ready_file,
        services=services,
        token=token,
        store_url=store or None,
    )


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ValueError(f"dashboard token file {token_file}: {exc.strerror or exc}") from None
    return os.environ.get("TIDINGS_DASHBOARD_TOKEN", "").strip() or None
