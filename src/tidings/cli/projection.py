"""``tidings projection status|rebuild``: a service's projections, their position and lag,
and a replay from the beginning into a new generation (see :mod:`tidings.projection`)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator

import typer
from rich.table import Table

from tidings.cli.common import (
    STORE_HELP,
    Broker,
    console,
    opened_store,
    opened_transport,
    run_async,
)
from tidings.host import DEFAULT_STORE, load_service
from tidings.projection import Projection
from tidings.runtime.projector import ProjectionStatus, Projector, Rebuilt

projection_app = typer.Typer(
    help="Projections: position and lag, rebuild from the beginning.", no_args_is_help=True
)
App = typer.Argument(..., help="The service, as module:attribute (shop.order:service)")
Store = typer.Option(DEFAULT_STORE, "--store", "-s", envvar="TIDINGS_STORE", help=STORE_HELP)


def _projections(app: str, name: str | None) -> list[Projection]:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        service = load_service(app)
    except ImportError as exc:
        raise LookupError(f"{app}: cannot import it ({exc})") from None
    if name is None:
        return list(service.projections.values())
    found = service.projections.get(name)
    if found is None:
        known = ", ".join(sorted(service.projections)) or "none"
        raise LookupError(f"{app} declares no projection {name!r} (it declares: {known})")
    return [found]


@contextlib.asynccontextmanager
async def _projectors(
    projections: list[Projection], store: str, broker: str
) -> AsyncIterator[list[Projector]]:
    if not projections:
        yield []
        return
    async with opened_transport(broker, needs="tidings projection:history") as transport:
        async with opened_store(store, projections[0].service) as opened:
            yield [Projector(p, transport, opened) for p in projections]


@projection_app.command("status")
def status(
    app: str = App,
    name: str = typer.Argument(None, help="One projection (default: all of the service's)"),
    store: str = Store,
    broker: str = Broker,
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON"),
) -> None:
    """Each projection's serving generation, position per partition, end offset and lag."""

    @run_async
    async def main() -> list[ProjectionStatus]:
        async with _projectors(_projections(app, name), store, broker) as projectors:
            return [await p.status() for p in projectors]

    found = main()
    if as_json:
        document = [
            {
                "name": s.name,
                "generation": s.generation,
                "building": s.building,
                "lag": s.lag,
                "partitions": [
                    {
                        "topic": p.topic,
                        "partition": p.partition,
                        "position": p.position,
                        "end": p.end,
                        "lag": p.lag,
                    }
                    for p in s.partitions
                ],
            }
            for s in found
        ]
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table("projection", "generation", "topic", "partition", "position", "end", "lag")
    for s in found:
        generation = str(s.generation) + (f" (building {s.building})" if s.building else "")
        for p in s.partitions or []:
            table.add_row(
                s.name,
                generation,
                p.topic,
                str(p.partition),
                str(p.position),
                str(p.end),
                str(p.lag),
            )
        if not s.partitions:
            table.add_row(s.name, generation, "-", "-", "-", "-", "0")
    console.print(table)


@projection_app.command("rebuild")
def rebuild(
    app: str = App,
    name: str = typer.Argument(..., help="The projection to rebuild: sales"),
    store: str = Store,
    broker: str = Broker,
) -> None:
    """Replay the projection's topics from offset 0 into a new generation, switch reads to
    it in one commit, then remove the old one (which serves reads until the switch)."""

    @run_async
    async def main() -> Rebuilt:
        async with _projectors(_projections(app, name), store, broker) as projectors:
            return await projectors[0].rebuild()

    done = main()
    before = f"generation {done.previous}" if done.previous else "no generation"
    console.print(
        f"{name}: {done.records} records replayed into generation {done.generation}; "
        f"reads switched from {before} (removed)"
    )
