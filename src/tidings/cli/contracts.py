"""``tidings contracts verify``: every consumer's expectations against every producer's schema.

Producers are the services named (what they declare they publish), or, with
``--against``, a lock directory (``tidings schema lock``) or every version registered in
a schema registry. One row per consumer handler and producer; exit 1 if a contract is
broken (see :mod:`tidings.contracts` for the rules).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from tidings.cli.common import console, fail, load_services, run_async
from tidings.contracts import Contract, Promise, promises_in_code, verify
from tidings.schemas import SchemaType, subject_for

contracts_app = typer.Typer(
    help="Consumer contracts: what handlers read against what producers write.",
    no_args_is_help=True,
)


@contracts_app.command("verify")
def verify_command(
    targets: list[str] = typer.Argument(..., help="Services, as package.module:attribute"),
    against: str = typer.Option(
        "",
        help="Producers' schemas from a lock directory or a registry URL (http://...); "
        "default: what the named services publish",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as JSON"),
) -> None:
    """Check that every handler can read what its producers write; exit 1 on a break."""
    try:
        services = load_services(targets)
    except (LookupError, TypeError) as exc:
        raise fail(str(exc)) from None
    if not against:
        promises = promises_in_code(services)
    elif against.startswith(("http://", "https://")):
        subjects = sorted(
            {subject_for(spec.message_type) for svc in services for spec in svc.handlers.values()}
        )
        promises = run_async(_registered)(against, subjects)
    else:
        promises = _locked(Path(against))
    contracts = verify(services, promises)
    if as_json:
        typer.echo(json.dumps([_as_dict(c) for c in contracts], indent=2))
    else:
        console.print(_table(contracts))
    broken = [c for c in contracts if not c.ok]
    if broken:
        raise typer.Exit(1)


def _locked(directory: Path) -> dict[str, list[Promise]]:
    if not directory.is_dir():
        raise fail(f"{directory}: no such directory (write it with `tidings schema lock`)")
    return {
        path.stem: [Promise(f"lock {path.name}", json.loads(path.read_text()))]
        for path in sorted(directory.glob("*.json"))
    }


async def _registered(url: str, subjects: list[str]) -> dict[str, list[Promise]]:
    from tidings.registry.client import RegistryClient, RegistryError

    promises: dict[str, list[Promise]] = {}
    async with RegistryClient(url) as client:
        for subject in subjects:
            try:
                versions = await client.versions(subject)
            except RegistryError as exc:
                if exc.status == 404:  # nothing registered: no producer known
                    continue
                raise
            promises[subject] = [
                Promise(f"registry v{version}", json.loads(text))
                for version, kind, text in versions
                if kind is SchemaType.JSON
            ]
    return promises


def _table(contracts: list[Contract]) -> Table:
    table = Table("type", "producer", "consumer", "contract", "why")
    for c in contracts:
        verdict = "[green]ok[/]" if c.ok else "[red]broken[/]"
        if c.ok and not c.producer:
            verdict = "[yellow]unchecked[/]"
        why = "; ".join(str(b) for b in c.breaks) or c.note
        table.add_row(c.message_type, c.producer or "-", c.consumer, verdict, why)
    return table


def _as_dict(c: Contract) -> dict[str, object]:
    return {
        "subject": c.subject,
        "type": c.message_type,
        "producer": c.producer or None,
        "consumer": c.consumer,
        "ok": c.ok,
        "breaks": [{"path": b.path, "reason": b.reason} for b in c.breaks],
        "note": c.note,
    }
