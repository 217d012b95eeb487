"""What every command shares: friendly errors, opening a broker or a store by URL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tidings.cdc.connect import ConnectError
from tidings.credentials import redact
from tidings.host import DEFAULT_BROKER, load_service
from tidings.registry.client import RegistryError
from tidings.service import Service
from tidings.store import Store, StoreError, make_store
from tidings.transport import Transport, TransportError, make_transport
from tidings.transport.errors import Unsupported

console = Console()
err_console = Console(stderr=True)
P = ParamSpec("P")
T = TypeVar("T")

BROKER_HELP = (
    "Broker URL: sqlite:///./.tidings/log.db, kafka://127.0.0.1:9092, nats://127.0.0.1:4222"
)
STORE_HELP = "Store URL: sqlite:///./.tidings/{service}.db or postgresql://127.0.0.1:5432/tidings"
# The --broker option of every command that reads or writes a broker.
Broker = typer.Option(DEFAULT_BROKER, "--broker", "-b", envvar="TIDINGS_BROKER", help=BROKER_HELP)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, option: str = "--since") -> float:
    """Seconds in a duration such as ``30s``, ``5m``, ``2h``, ``1d`` or ``1h30m``; a
    ValueError naming ``option`` otherwise."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{option} {text!r}: expected a duration such as 30s, 5m, 2h, 1d or 1h30m")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def parse_since(text: str) -> float | None:
    """The time a ``--since`` names (seconds since the epoch), or None for ``all``
    (every record the broker keeps). Raises :class:`typer.Exit` with the reason."""
    if text.strip().lower() == "all":
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError as exc:
        raise fail(f"{exc}, or all") from None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (about twice the event-loop throughput), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: MESSAGE`` (secrets redacted, markup escaped); the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(redact(message))}", highlight=False,
                      soft_wrap=True)  # fmt: skip
    return typer.Exit(code)


def run_async(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command; a broker or store error becomes one line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                return runner.run(fn(*args, **kwargs))
        except (
            TransportError,
            StoreError,
            ConnectError,
            RegistryError,
            ValueError,
            LookupError,
            TypeError,
        ) as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper


def load_services(targets: Iterable[str]) -> list[Service]:
    """Import each ``package.module:attribute`` target as a :class:`Service`.

    The current directory goes on the module path first (as uvicorn does), so
    ``greet:service`` finds greet.py here. An import that fails is a ``LookupError``
    naming the target; an attribute that is no service, a ``TypeError``.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    services = []
    for target in targets:
        try:
            services.append(load_service(target))
        except ImportError as exc:
            raise LookupError(
                f"cannot load {target}: {exc} (run from the directory holding the module, "
                "or put it on PYTHONPATH)"
            ) from None
    return services


@contextlib.asynccontextmanager
async def opened_transport(url: str, needs: str | None = None) -> AsyncIterator[Transport]:
    """The connected transport of ``url``; with ``needs`` (the command and the
    Capabilities flag it reads, e.g. ``"tidings tail:offsets"``), one line saying the
    broker cannot do it, instead of an odd failure halfway."""
    transport = make_transport(url)
    if needs is not None:
        command, _, capability = needs.partition(":")
        if not getattr(transport.capabilities, capability):
            raise Unsupported(
                f"{command} is not supported on {transport.platform}: it reads the log by"
                f" offset, and {transport.platform} keeps no {capability}"
            )
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


@contextlib.asynccontextmanager
async def opened_store(url: str, service: str) -> AsyncIterator[Store]:
    store = make_store(url, service)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()
