"""``tidings trace KEY``: the causal tree of one correlation, read from a window of the log."""

from __future__ import annotations

import json
from collections.abc import Collection

import typer

from tidings.cli.common import BROKER_HELP, err_console, opened_transport, parse_since, run_async
from tidings.credentials import redact
from tidings.host import DEFAULT_BROKER
from tidings.observability.causality import CausalTrace
from tidings.observability.reading import read_trace

DEFAULT_WINDOW = "1d"  # --since's default: DEFAULT_SINCE seconds


async def trace_order(
    broker: str, key: str, since: str = DEFAULT_WINDOW, topics: Collection[str] = ()
) -> CausalTrace:
    """What ``tidings trace KEY --since SINCE --topic ...`` computes (and the benchmark
    times): the tree of ``key`` from the records stored since then in ``topics``."""
    start = parse_since(since)
    async with opened_transport(broker, needs="tidings trace:offsets") as transport:
        return await read_trace(transport, key, since=start, topics=topics)


def trace(
    key: str = typer.Argument(
        ..., help="A correlation id, or an event id or subject (such as an order id) in one"
    ),
    since: str = typer.Option(
        DEFAULT_WINDOW,
        "--since",
        help="Read records stored this long ago and later (30m, 2h, 7d), or all",
    ),
    topics: list[str] = typer.Option(
        [],
        "--topic",
        "-t",
        help="Read only this topic (repeatable; dead-letter and replay topics are always read)",
    ),
    broker: str = typer.Option(
        DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the tree as JSON"),
) -> None:
    """Which event caused which, in which service, when, and how long from cause to effect.

    Reads the records of the last day (--since) of every topic (--topic narrows it) in one
    pass; records that are not CloudEvents are skipped.
    """
    result = run_async(trace_order)(broker, key, since, topics)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in result.render():
            typer.echo(line)
    if not result.roots:
        everything = since.strip().lower() == "all"
        window = "in the log" if everything else f"stored in the last {since}"
        err_console.print(
            f"no event {window} in {redact(broker)} has correlation id, id or subject {key!r}"
            + ("" if everything else " (--since all reads every record kept)"),
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
