"""``tidings history KIND ID``: an event-sourced aggregate's audit trail and past state."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta

import typer

from tidings.cli.common import STORE_HELP, opened_store, parse_duration, run_async
from tidings.eventsourcing.history import History, read_history
from tidings.host import DEFAULT_STORE, load_service
from tidings.store.base import read_only


def parse_at(text: str, now: datetime | None = None) -> datetime:
    """``--at``: an ISO 8601 time (UTC unless it names a zone) or a duration ago (``5m``)."""
    now = now or datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - timedelta(seconds=parse_duration(text))
        except ValueError:
            raise ValueError(
                f"--at {text!r}: expected a time such as 2026-12-01T20:30:00Z or a duration "
                "ago such as 30s, 5m, 2h"
            ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def history(
    kind: str = typer.Argument(..., help="The aggregate, by name: account"),
    id: str = typer.Argument(..., help="Its id: c01"),
    app: str = typer.Option(
        "shop.billing:service", "--app", help="The service that keeps it, as module:attribute"
    ),
    store: str = typer.Option(
        DEFAULT_STORE, "--store", "-s", envvar="TIDINGS_STORE", help=STORE_HELP
    ),
    at: str = typer.Option("", "--at", help="State at this time: 2026-12-01T20:30:00Z, or 5m ago"),
    as_json: bool = typer.Option(False, "--json", help="Print the trail and state as JSON"),
) -> None:
    """Every event of one aggregate, oldest first, and its state now or at --at."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)

    @run_async
    async def main() -> History:
        moment = parse_at(at) if at else None
        try:
            service = load_service(app)
        except ImportError as exc:
            raise LookupError(f"--app {app}: cannot import it ({exc})") from None
        aggregate_type = service.aggregates.get(kind.lower())
        if aggregate_type is None:
            known = ", ".join(sorted(service.aggregates)) or "none"
            raise LookupError(f"{app} keeps no aggregate named {kind!r} (it keeps: {known})")
        async with opened_store(store, service.name) as opened:
            async with read_only(opened, service.name) as uow:
                return await read_history(uow, aggregate_type, id, moment)

    found = main()
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in found.render():
            typer.echo(line)
    if not found.events:
        raise typer.Exit(1)
