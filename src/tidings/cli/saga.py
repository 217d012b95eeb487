"""``tidings saga show ID``: one orchestrated saga's state, what it awaits, and its history."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from tidings.cli.common import STORE_HELP, opened_store, run_async
from tidings.credentials import redact
from tidings.host import DEFAULT_STORE, load_service
from tidings.saga.process import Saga
from tidings.saga.state import SagaState, render
from tidings.store.base import read_only

saga_app = typer.Typer(help="Orchestrated sagas: state and history.", no_args_is_help=True)


def _saga(app: str, name: str) -> Saga[Any]:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        service = load_service(app)
    except ImportError as exc:
        raise LookupError(f"--app {app}: cannot import it ({exc})") from None
    sagas: dict[str, Saga[Any]] = service.sagas
    if not sagas:
        raise LookupError(f"{app} declares no saga (tidings.saga.Saga(service, ...))")
    if not name:
        if len(sagas) > 1:
            raise LookupError(f"{app} has several sagas ({', '.join(sagas)}): name one with --saga")
        return next(iter(sagas.values()))
    if name not in sagas:
        raise LookupError(f"{app} has no saga {name!r} (it has: {', '.join(sagas)})")
    return sagas[name]


@saga_app.command("show")
def show(
    id: str = typer.Argument(..., help="The saga's key: the order id, in the shop"),
    app: str = typer.Option(
        "shop.orchestrator:service", "--app", help="The service running it, as module:attribute"
    ),
    name: str = typer.Option("", "--saga", help="Which of its sagas (if it has several)"),
    store: str = typer.Option(
        DEFAULT_STORE, "--store", "-s", envvar="TIDINGS_STORE", help=STORE_HELP
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON"),
) -> None:
    """The saga's step, what it sent and awaits, its deadline, and every transition."""

    @run_async
    async def main() -> tuple[Saga[Any], SagaState | None]:
        saga = _saga(app, name)
        async with opened_store(store, saga.service.name) as opened:
            async with read_only(opened, saga.service.name) as uow:
                doc = await uow.get(saga.collection.name, id)
        return saga, None if doc is None else saga.state.model_validate(doc.data)

    saga, state = main()
    if state is None:
        typer.echo(f"saga {saga.name}: no instance {id!r} in {redact(store)}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(state.model_dump(mode="json"), indent=2, ensure_ascii=False))
    else:
        for line in render(saga.name, state):
            typer.echo(line)
