"""``tidings asyncapi``: the AsyncAPI 3.0 document of services, as YAML or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from tidings.cli.common import console, fail, load_services

if TYPE_CHECKING:
    from tidings.codec import ContentMode


def asyncapi(
    targets: list[str] = typer.Argument(
        ..., metavar="MODULE:SERVICE...", help="The services, as package.module:attribute"
    ),
    format_: str = typer.Option("yaml", "--format", "-f", help="yaml or json"),
    server: list[str] = typer.Option(
        [],
        "--server",
        help="A broker the services run on, NAME=URL (kafka://, nats://, sqlite:///); repeatable",
    ),
    content_mode: str = typer.Option(
        "",
        "--content-mode",
        help="binary or structured CloudEvents (default: the servers' transports', else binary)",
    ),
    title: str = typer.Option("", help="The document's title (default: names the services)"),
    api_version: str = typer.Option("1.0.0", help="The version of the API the document states"),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file instead of standard output"
    ),
) -> None:
    """Write one AsyncAPI 3.0.0 document describing SERVICES: a channel per topic, their
    send and receive operations, each message's payload schema and CloudEvents headers."""
    from tidings.asyncapi import asyncapi_document, dump, parse_server

    if format_ not in ("yaml", "json"):
        raise fail(f"--format {format_!r}: yaml or json")
    if content_mode not in ("", "binary", "structured"):
        raise fail(f"--content-mode {content_mode!r}: binary or structured")
    try:
        servers = [parse_server(s) for s in server]
        document = asyncapi_document(
            load_services(targets),
            servers=servers,
            content_mode=cast("ContentMode | None", content_mode or None),
            title=title or None,
            version=api_version,
        )
    except (LookupError, TypeError, ValueError) as exc:
        raise fail(str(exc)) from None
    text = dump(document, "json" if format_ == "json" else "yaml")
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}") from None
    console.print(
        f"wrote {output}: {len(document['channels'])} channel(s), "
        f"{len(document['operations'])} operation(s), "
        f"{len(document['components']['messages'])} message(s)",
        highlight=False,
    )
