"""The order service run for real (``tidings run shop.order:service --http``) behind its guard."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tidings.testing import free_port
from tidings.testing.processes import ServiceProcesses

OrderApi = Callable[[dict[str, str]], httpx.Client]


@pytest.fixture(scope="module")
def order_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrderApi]:
    """Start the order service with this environment (TIDINGS_API_KEYS, ...): a client on it.

    Module-scoped: a process takes seconds to start, so a module's tests share theirs.
    """
    tmp_path = tmp_path_factory.mktemp("order-api")
    started: list[tuple[ServiceProcesses, httpx.Client]] = []

    def start(env: dict[str, str]) -> httpx.Client:
        workdir = tmp_path / f"order{len(started)}"
        workdir.mkdir()
        port = free_port()
        procs = ServiceProcesses(
            workdir,
            f"sqlite:///{workdir}/log.db",
            f"sqlite:///{workdir}/{{service}}.db",
            {"order": "shop.order:service"},
            http={"order": port},
        )
        procs.env.update(env)
        procs.start()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        started.append((procs, client))
        procs.wait_ready()
        return client

    yield start
    for procs, client in started:
        client.close()
        procs.stop()
