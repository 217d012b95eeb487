"""``tidings new NAME``: a runnable service module ``NAME.py`` and its test ``test_NAME.py``."""

from __future__ import annotations

import keyword
import re
import sys
from pathlib import Path

import typer

from tidings.cli.common import console, fail

_NAME = re.compile(r"[a-z][a-z0-9_]*")

SERVICE = '''\
r"""The {name} service: handles {Camel}Requested, publishes {Camel}Done, counts per id.

Run it:   tidings run {name}:service
Feed it:  tidings publish {name}.requests --type {Camel}Requested --key k1 \\
              --data '{{"id": "k1", "text": "hi"}}'
Watch it: tidings tail {name}.done --from-beginning
Test it:  pytest test_{name}.py
"""

from pydantic import BaseModel
from tidings import Context, Event, Service


class {Camel}Requested(Event, topic="{name}.requests", key="id"):
    """A request for this service (published by someone else)."""

    id: str
    text: str


class {Camel}Done(Event, topic="{name}.done", key="id"):
    """What this service publishes when it has handled a request."""

    id: str
    text: str
    times: int


class Tally(BaseModel):
    """This service's own state: how many requests it handled per id."""

    times: int = 0


service = Service("{name}")  # the name is the consumer group
tallies = service.collection("tallies", Tally)


@service.on  # handles {Camel}Requested: the type comes from the annotation
async def handle(request: {Camel}Requested, ctx: Context) -> None:
    tally = await ctx.get(tallies, request.id) or Tally()
    tally = Tally(times=tally.times + 1)
    await ctx.put(tallies, request.id, tally)
    # Published through the outbox: it commits with the tally, or not at all.
    ctx.publish({Camel}Done(id=request.id, text=request.text.upper(), times=tally.times))
'''

TEST = '''\
"""Tests of the {name} service, run in process by TestApp (no broker, no database to start)."""

import pytest
from tidings.testing import TestApp

from {name} import {Camel}Done, {Camel}Requested, service, tallies


@pytest.mark.asyncio
async def test_handles_requests_and_counts_them() -> None:
    async with TestApp(service) as app:
        await app.publish({Camel}Requested(id="k1", text="hi"))
        await app.publish({Camel}Requested(id="k1", text="again"))
        await app.drain()
        done = await app.published({Camel}Done)
        assert [(d.text, d.times) for d in done] == [("HI", 1), ("AGAIN", 2)]
        tally = await app.get(tallies, "k1")
        assert tally is not None and tally.times == 2
        assert await app.dead_letters(service) == []
'''


def check_name(name: str) -> None:
    """A name that is a module, a service (consumer group) and a topic prefix at once."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(
            f"{name!r} cannot name a service module: use lower case letters, digits and _, "
            "starting with a letter (e.g. hello or order_history)"
        )
    if name in sys.stdlib_module_names or name in ("tidings", "pydantic", "pytest"):
        raise ValueError(f"{name!r} would hide the module of that name: pick another name")


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def render(name: str) -> dict[str, str]:
    """The files ``tidings new`` writes for ``name``: file name -> text."""
    check_name(name)
    values = {"name": name, "Camel": camel(name)}
    return {f"{name}.py": SERVICE.format(**values), f"test_{name}.py": TEST.format(**values)}


def new(
    name: str = typer.Argument(..., help="The service's name, also its module: NAME.py"),
    directory: Path = typer.Option(
        Path("."), "--dir", "-d", help="Where to write the files (created if missing)"
    ),
) -> None:
    """Write a runnable service NAME.py and its test test_NAME.py (never overwrites)."""
    try:
        files = render(name)
    except ValueError as exc:
        raise fail(str(exc)) from None
    existing = [str(directory / f) for f in files if (directory / f).exists()]
    if existing:
        raise fail(
            f"{', '.join(existing)} already exist(s): not overwriting; remove or pick another name"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for file_name, text in files.items():
            with (directory / file_name).open("x", encoding="utf-8") as out:
                out.write(text)
    except OSError as exc:
        raise fail(f"cannot write to {directory}: {exc.strerror or exc}") from None
    where = "" if directory == Path(".") else f" (in {directory})"
    console.print(
        f"wrote {name}.py and test_{name}.py{where}\n"
        f"  test it: pytest test_{name}.py\n"
        f"  run it:  tidings run {name}:service",
        highlight=False,
        markup=False,
    )
