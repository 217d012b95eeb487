"""Where the embedded registry keeps subjects, versions, schemas and config: SQLite or
PostgreSQL, chosen by URL as the stores are (``sqlite:///./.tidings/registry.db``,
``postgresql://host/db``), in tables of its own (``schema_registry_*``).

A schema (type + canonical text) is stored once and has one id wherever it is
registered, as in Confluent's registry. Versions are numbered per subject from 1 and are
deleted softly (``deleted``), a permanent delete removes the row. Every change runs in
one transaction, serialised across processes (``BEGIN IMMEDIATE`` on SQLite, an advisory
lock on PostgreSQL), so two registrations cannot take the same id or version.

Synchronous on purpose: each call is one short transaction on one connection, which a
development registry can afford to run on its event loop; a lock keeps the connection
to one caller at a time all the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from tidings.urls import sqlite_path

TABLES = [
    """CREATE TABLE IF NOT EXISTS schema_registry_schemas (
        id INTEGER PRIMARY KEY, schema_type TEXT NOT NULL, canonical TEXT NOT NULL,
        schema TEXT NOT NULL, UNIQUE (schema_type, canonical))""",
    """CREATE TABLE IF NOT EXISTS schema_registry_versions (
        subject TEXT NOT NULL, version INTEGER NOT NULL, schema_id INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (subject, version))""",
    # subject '' holds the global config.
    """CREATE TABLE IF NOT EXISTS schema_registry_config (
        subject TEXT PRIMARY KEY, compatibility TEXT NOT NULL)""",
]
LOCK = 0x7265_6769_7374_7279  # "registry": PostgreSQL advisory lock of every change


class StorageUnavailable(RuntimeError):
    """The registry's database cannot be reached; the message names its URL."""


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    subject: str
    version: int
    schema_id: int
    schema_type: str
    schema: str
    deleted: bool = False


class _Cursor(Protocol):
    def run(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...


class _Database(Protocol):
    def transaction(self) -> contextlib.AbstractContextManager[_Cursor]: ...
    def close(self) -> None: ...


class _SQLite:
    def __init__(self, url: str) -> None:
        import os

        path = sqlite_path(url)
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{url}: cannot open SQLite file {path}: {exc}") from None
        self.lock = threading.Lock()

    def run(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class _Postgres:
    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        try:
            self.conn = psycopg.connect(url, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"{_redact(url)}: cannot connect: {exc}".strip()) from None
        self.lock = threading.Lock()

    def run(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(query.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        with self.lock, self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            yield self

    def close(self) -> None:
        self.conn.close()


def _redact(url: str) -> str:
    from tidings.store.postgres import redact

    return redact(url)


class RegistryStorage:
    """Subjects, versions, schemas and config in one database (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:"):
            self.db: _Database = _SQLite(url)
        elif url.startswith(("postgresql:", "postgres:")):
            self.db = _Postgres(url)
        else:
            raise ValueError(
                f"{url!r}: the registry stores in sqlite:///./registry.db or postgresql://host/db"
            )
        with self.db.transaction() as tx:
            for statement in TABLES:
                tx.run(statement)

    def close(self) -> None:
        self.db.close()

    def subjects(self, deleted: bool = False) -> list[str]:
        with self.db.transaction() as tx:
            rows = tx.run(
                "SELECT DISTINCT subject FROM schema_registry_versions"
                + ("" if deleted else " WHERE deleted = 0")
                + " ORDER BY subject"
            )
        return [r[0] for r in rows]

    def versions(self, subject: str, deleted: bool = False) -> list[Version]:
        """The subject's versions, oldest first (soft-deleted ones only if asked)."""
        with self.db.transaction() as tx:
            rows = tx.run(
                "SELECT v.subject, v.version, v.schema_id, s.schema_type, s.schema, v.deleted"
                " FROM schema_registry_versions v JOIN schema_registry_schemas s ON s.id = v.schema_id"
                " WHERE v.subject = ?"
                + ("" if deleted else " AND v.deleted = 0")
                + " ORDER BY v.version",
                (subject,),
            )
        return [Version(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def schema(self, schema_id: int) -> tuple[str, str] | None:
        """(schema type, schema text) of an id."""
        with self.db.transaction() as tx:
            rows = tx.run(
                "SELECT schema_type, schema FROM schema_registry_schemas WHERE id = ?", (schema_id,)
            )
        return (rows[0][0], rows[0][1]) if rows else None

    def add(self, subject: str, schema_type: str, canonical: str, schema: str) -> Version:
        """Register ``schema`` as the subject's next version (its id reused if known)."""
        with self.db.transaction() as tx:
            found = tx.run(
                "SELECT id FROM schema_registry_schemas WHERE schema_type = ? AND canonical = ?",
                (schema_type, canonical),
            )
            if found:
                schema_id = int(found[0][0])
                schema = self._text(tx, schema_id)
            else:
                schema_id = int(
                    tx.run("SELECT COALESCE(MAX(id), 0) + 1 FROM schema_registry_schemas")[0][0]
                )
                tx.run(
                    "INSERT INTO schema_registry_schemas (id, schema_type, canonical, schema)"
                    " VALUES (?, ?, ?, ?)",
                    (schema_id, schema_type, canonical, schema),
                )
            version = int(tx.run(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM schema_registry_versions WHERE subject = ?",
                (subject,),
            )[0][0])  # fmt: skip
            tx.run(
                "INSERT INTO schema_registry_versions (subject, version, schema_id) VALUES (?, ?, ?)",
                (subject, version, schema_id),
            )
        return Version(subject, version, schema_id, schema_type, schema)

    @staticmethod
    def _text(tx: _Cursor, schema_id: int) -> str:
        return str(
            tx.run("SELECT schema FROM schema_registry_schemas WHERE id = ?", (schema_id,))[0][0]
        )

    def delete(self, subject: str, version: int | None, permanent: bool) -> list[int]:
        """Delete one version or all of a subject; the version numbers deleted."""
        where, params = "subject = ?", (subject,)  # type: tuple[str, tuple[Any, ...]]
        if version is not None:
            where, params = "subject = ? AND version = ?", (subject, version)
        with self.db.transaction() as tx:
            if permanent:
                rows = tx.run(
                    f"SELECT version FROM schema_registry_versions WHERE {where} AND deleted = 1",
                    params,
                )
                tx.run(
                    f"DELETE FROM schema_registry_versions WHERE {where} AND deleted = 1", params
                )
            else:
                rows = tx.run(
                    f"SELECT version FROM schema_registry_versions WHERE {where} AND deleted = 0",
                    params,
                )
                tx.run(f"UPDATE schema_registry_versions SET deleted = 1 WHERE {where}", params)
        return sorted(int(r[0]) for r in rows)

    def compatibility(self, subject: str) -> str | None:
        """The subject's configured mode ('' for the global one), None if unset."""
        with self.db.transaction() as tx:
            rows = tx.run(
                "SELECT compatibility FROM schema_registry_config WHERE subject = ?", (subject,)
            )
        return str(rows[0][0]) if rows else None

    def set_compatibility(self, subject: str, mode: str | None) -> None:
        with self.db.transaction() as tx:
            tx.run("DELETE FROM schema_registry_config WHERE subject = ?", (subject,))
            if mode is not None:
                tx.run(
                    "INSERT INTO schema_registry_config (subject, compatibility) VALUES (?, ?)",
                    (subject, mode),
                )
