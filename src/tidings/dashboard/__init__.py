"""The web dashboard: live events, order timelines, consumer lag, dead letters, topics.

``tidings dashboard --broker URL`` serves it on http://127.0.0.1:8050; ``tidings demo
--dashboard`` starts it beside the shop. It reads the broker directly (any transport),
so it needs no access to the services and shows what the log holds. Given the services
(``--service MODULE:service``, repeatable) it also serves their AsyncAPI document at
``/asyncapi.json`` and as a page at ``/asyncapi``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from tidings.dashboard.app import create_app
from tidings.dashboard.login import is_loopback
from tidings.service import Service

__all__ = ["create_app", "serve"]


def serve(
    broker_url: str,
    host: str = "127.0.0.1",
    port: int = 8050,
    *,
    ready_file: Path | None = None,
    services: Sequence[Service] = (),
    token: str | None = None,
    store_url: str | None = None,
) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM (blocking).

    Off loopback a ``token`` is required (:mod:`tidings.dashboard.login`); with one, any
    Host header is accepted, since the token, not the name, keeps other sites out.
    """
    import asyncio

    import uvicorn

    if not is_loopback(host) and not token:
        raise ValueError(
            f"the dashboard refuses to listen on {host} without a token: it shows every "
            "event and can replay dead letters (give --token-file FILE or "
            "TIDINGS_DASHBOARD_TOKEN, or listen on 127.0.0.1)"
        )
    allowed = (
        None if token else frozenset({"127.0.0.1", "localhost", "::1", "[::1]", host.lower()})
    )
    app = create_app(
        broker_url, allowed_hosts=allowed, services=services, token=token, store_url=store_url
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        # uvicorn has no "started" event to wait on
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if ready_file is not None and server.started:
            _write_pid(ready_file)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def _write_pid(path: Path) -> None:
    import os

    path.write_text(str(os.getpid()))
