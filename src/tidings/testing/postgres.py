"""A fresh PostgreSQL schema per test or benchmark run, dropped afterwards.

Everything that runs on the one PostgreSQL of ``scripts/services`` shares its database;
state left by one run (the shop's stock, say) would steer the next. A run in its own
schema starts empty and leaves nothing behind::

    with fresh_schema("postgresql://127.0.0.1:5432/tidings") as url:
        ...  # url names the same database, with the new schema first in the search path
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql


@contextlib.contextmanager
def fresh_schema(url: str, prefix: str = "tidings_test") -> Iterator[str]:
    """``url`` with a new, empty schema first in its search path; dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-c%20search_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def sqlite_or_postgres(
    kind: str, sqlite_url: str, postgres_url: str = "postgresql://127.0.0.1:5432/tidings"
) -> Iterator[str]:
    """The store URL of a test run over both stores: ``sqlite_url``, or a fresh schema on
    the test PostgreSQL (skipped when it is not there, failed under CI=true)."""
    if kind == "sqlite":
        yield sqlite_url
        return
    from tidings.testing.servers import require

    require(postgres_url)
    with fresh_schema(postgres_url) as url:
        yield url
