"""``tidings schema lock|check``: the schemas of services, in files or against a registry.

``lock`` writes one file per subject and schema type to a directory (``schemas/``):
``<subject>.json`` holds the JSON Schema (pretty, sorted keys, so a change reads as a
diff in review). ``check`` compares the current code with those files, or with a
registry's subjects, under each subject's rule (a registry's, or BACKWARD_TRANSITIVE for
files), and exits 1 listing every break.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tidings.cli.common import console, err_console, fail, load_services, run_async
from tidings.messages import Message
from tidings.schemas import (
    DEFAULT_MODE,
    Break,
    SchemaType,
    canonical_text,
    check,
    pretty_text,
    schema_of,
    subject_for,
)

schema_app = typer.Typer(
    help="Schemas of services: lock them in files, check changes.", no_args_is_help=True
)

Targets = typer.Argument(..., help="Services, as package.module:attribute")


def published_types(targets: list[str]) -> list[type[Message]]:
    """The message types the services publish, each once, ordered by subject."""
    try:
        services = load_services(targets)
    except (LookupError, TypeError) as exc:
        raise fail(str(exc)) from None
    found: dict[str, type[Message]] = {}
    for target, service in zip(targets, services, strict=True):
        if not service.publishes:
            raise fail(f"{target} declares nothing it publishes: Service(..., publishes=[...])")
        for message_type in service.publishes:
            found[subject_for(message_type)] = message_type
    return [found[s] for s in sorted(found)]


def lock_files(types: list[type[Message]]) -> dict[str, str]:
    """File name -> text, for every subject (what ``lock`` writes)."""
    return {f"{subject_for(t)}.json": pretty_text(schema_of(t, SchemaType.JSON)) for t in types}


@schema_app.command("lock")
def lock(
    targets: list[str] = Targets,
    directory: Path = typer.Option(Path("schemas"), "--dir", help="Where to write them"),
) -> None:
    """Write the current schemas of what the services publish, one file per subject."""
    files = lock_files(published_types(targets))
    directory.mkdir(parents=True, exist_ok=True)
    stale = {p.name for p in directory.glob("*.json")} - set(files)
    for name in sorted(stale):
        (directory / name).unlink()
    for name, text in files.items():
        (directory / name).write_text(text)
    console.print(
        f"{len(files)} schema(s) in {directory}/" + (f", {len(stale)} removed" if stale else "")
    )


@schema_app.command("check")
def check_command(
    targets: list[str] = Targets,
    against: str = typer.Option("schemas", help="A lock directory, or a registry URL (http://...)"),
) -> None:
    """Check the current schemas against a lock directory or a registry; exit 1 on a break."""
    types = published_types(targets)
    if against.startswith(("http://", "https://")):
        problems = run_async(_against_registry)(types, against)
    else:
        problems = _against_files(types, Path(against))
    for subject, mode, breaks in problems:
        for b in breaks:
            err_console.print(f"{subject} ({mode}): {b}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(types)} schema(s) compatible with {against}")


def _against_files(
    types: list[type[Message]], directory: Path
) -> list[tuple[str, str, list[Break]]]:
    if not directory.is_dir():
        raise fail(f"{directory}: no such directory (write it with `tidings schema lock`)")
    problems = []
    for t in types:
        path = directory / f"{subject_for(t)}.json"
        if not path.exists():
            continue  # a new subject: nothing to break
        new = canonical_text(schema_of(t, SchemaType.JSON))
        breaks = check(DEFAULT_MODE, SchemaType.JSON, new, [json.loads(path.read_text())])
        if breaks:
            problems.append((subject_for(t), DEFAULT_MODE.value, breaks))
    return problems


async def _against_registry(
    types: list[type[Message]], url: str
) -> list[tuple[str, str, list[Break]]]:
    from tidings.registry.client import RegistryClient

    problems = []
    async with RegistryClient(url) as client:
        for t in types:
            subject = subject_for(t)
            previous = [v for v in await client.versions(subject) if v[1] is SchemaType.JSON]
            mode = await client.mode(subject)
            new = canonical_text(schema_of(t, SchemaType.JSON))
            breaks = check(
                mode, SchemaType.JSON, new, [v[2] for v in previous], [v[0] for v in previous]
            )
            if breaks:
                problems.append((subject, mode.value, breaks))
    return problems
