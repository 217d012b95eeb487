"""``tidings trace KEY``: the causal tree of one correlation, read from the log."""

from __future__ import annotations

import json

import typer

from tidings.cli.common import BROKER_HELP, err_console, opened_transport, run_async
from tidings.host import DEFAULT_BROKER
from tidings.observability.causality import CausalTrace, read_trace


def trace(
    key: str = typer.Argument(
        ..., help="A correlation id, or an event id or subject (such as an order id) in one"
    ),
    broker: str = typer.Option(
        DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the tree as JSON"),
) -> None:
    """Which event caused which, in which service, when, and how long from cause to effect.

    Reads every topic of the log (dead letters and replays included), so on a large log it
    takes a while.
    """

    @run_async
    async def main() -> CausalTrace:
        async with opened_transport(broker, needs="tidings trace:offsets") as transport:
            return await read_trace(transport, key)

    result = main()
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in result.render():
            typer.echo(line)
    if not result.roots:
        err_console.print(
            f"no event in {broker} has correlation id, id or subject {key!r}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
