"""The embedded registry served over real HTTP (uvicorn in a thread, on a free port), on
SQLite and on a fresh PostgreSQL database of its own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tidings.registry.server import make_app
from tidings.registry.storage import RegistryStorage
from tidings.testing import free_port
from tidings.testing.servers import require

POSTGRES = "postgresql://postgres@127.0.0.1:5432/tidings"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database made for one test and dropped after it."""
    require(POSTGRES)
    import psycopg

    name = f"tidings_registry_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.db"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture
def registry(store_url: str) -> Iterator[str]:
    """The URL of an embedded registry serving over HTTP on ``store_url``."""
    storage = RegistryStorage(store_url)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_app(storage), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the registry did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        storage.close()
