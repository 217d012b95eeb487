"""Stores: the persistence the reliability layer needs, behind :mod:`tidings.store.base`.

Pick one by URL with :func:`open_store`:

* ``sqlite:///./state.db`` - a SQLite file (the default; ``{service}`` in the path is
  replaced by the service name, so each service can keep its own database);
* ``postgresql://user@host:5432/db`` - PostgreSQL.
"""

from __future__ import annotations

from tidings.store.base import (
    ConcurrencyConflict,
    Document,
    OutboxEntry,
    Store,
    StoreError,
    StoreUnavailable,
    UnitOfWork,
)
from tidings.urls import sqlite_path

__all__ = [
    "ConcurrencyConflict",
    "Document",
    "InvalidStoreURL",
    "OutboxEntry",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UnitOfWork",
    "make_store",
    "open_store",
]


class InvalidStoreURL(StoreError, ValueError):
    """A store URL that names no known store."""


def make_store(url: str, service: str = "") -> Store:
    """Build (but do not connect) the store a URL names."""
    url = url.replace("{service}", service)
    if url.startswith("sqlite:"):
        from tidings.store.sqlite import SQLiteStore

        try:
            return SQLiteStore(sqlite_path(url), url=url)
        except ValueError as exc:
            raise InvalidStoreURL(str(exc)) from None
    if url.startswith(("postgresql:", "postgres:")):
        from tidings.store.postgres import PostgresStore

        return PostgresStore(url)
    raise InvalidStoreURL(
        f"{url!r} is not a store URL; use sqlite:///./state.db or postgresql://host/db"
    )


async def open_store(url: str, service: str = "") -> Store:
    store = make_store(url, service)
    await store.connect()
    return store
