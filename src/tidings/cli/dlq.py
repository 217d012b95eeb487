"""``tidings dlq list|show|replay``: a group's dead letters, read by time, sent back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.table import Table

from tidings.cli.common import Broker, console, fail, opened_transport, parse_since, run_async
from tidings.reliability.deadletter import DeadLetter, dlq_topic, read_dead_letters

dlq_app = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)

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


@dlq_app.command("list")
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


@dlq_app.command("show")
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


@dlq_app.command("replay")
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
