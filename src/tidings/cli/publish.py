"""``tidings publish TOPIC --type T --data JSON``: put one event on a topic by hand."""

from __future__ import annotations

import json
from typing import Any

import typer

from tidings import codec
from tidings.cli.common import BROKER_HELP, console, fail, opened_transport, run_async
from tidings.envelope import Envelope
from tidings.host import DEFAULT_BROKER
from tidings.messages import raw_envelope

USAGE = "tidings publish TOPIC --type TYPE --data JSON [--key KEY]"


def parse_data(text: str) -> dict[str, Any]:
    """The event's data from ``--data``: a JSON object, or ValueError saying why not."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--data is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f'--data must be a JSON object such as \'{{"name": "Ada"}}\', '
            f"not a {type(data).__name__}"
        )
    return data


def make_envelope(
    type_: str, data: dict[str, Any], *, source: str, key: str | None = None
) -> Envelope:
    """A CloudEvents envelope starting a new correlation, as an outside producer sends it."""
    return raw_envelope(type_, data, source=source, subject=key)


def publish(
    topic: str = typer.Argument("", show_default=False, help="The topic to publish to"),
    type_: str = typer.Option(
        "", "--type", "-t", show_default=False, help="The event type, e.g. OrderPlaced"
    ),
    data: str = typer.Option(
        "", "--data", "-d", show_default=False, help="The event's data: a JSON object"
    ),
    key: str | None = typer.Option(
        None, "--key", "-k", help="The subject (aggregate id): picks the partition"
    ),
    source: str = typer.Option("tidings-cli", "--source", help="The CloudEvents source"),
    broker: str = typer.Option(
        DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP
    ),
) -> None:
    """Publish one event (a CloudEvents envelope around --data) to TOPIC."""
    # Checked here rather than by typer, so a missing argument is one line, as other errors.
    missing = [
        name for name, value in (("TOPIC", topic), ("--type", type_), ("--data", data)) if not value
    ]
    if missing:
        raise fail(f"missing {', '.join(missing)}: {USAGE}")
    if not source.strip():
        raise fail("--source must not be empty")
    try:
        envelope = make_envelope(type_, parse_data(data), source=source, key=key)
    except ValueError as exc:
        raise fail(str(exc)) from None

    @run_async
    async def main() -> None:
        async with opened_transport(broker) as transport:
            await transport.publish([codec.encode(envelope, topic, transport.content_mode)])

    main()
    console.print(
        f"published {envelope.type} {envelope.id} to {topic}"
        + (f" (key {key})" if key is not None else ""),
        highlight=False,
        markup=False,
    )
