"""Debezium connectors on a Kafka Connect worker, through Connect's REST API.

    register(CONNECT, "legacy", "postgresql://postgres@127.0.0.1:5432/tidings",
             tables=["legacy.customers", "legacy.products"], topic_prefix="legacy")
    states(CONNECT, "legacy")       # {"connector": "RUNNING", "tasks": ["RUNNING"]}
    drop(CONNECT, "legacy", database_url)   # connector, replication slot and publication

Rules:

* a connector ``NAME`` reads through the replication slot and publication
  ``tidings_cdc_<NAME>`` (``scripts/services down connect`` drops the inactive
  ``tidings_cdc_*`` slots, so a forgotten one does not keep WAL forever);
* its change topics are ``<topic_prefix>.<table>`` (a ``RegexRouter`` drops the schema
  from Debezium's ``<prefix>.<schema>.<table>``), keyed by the row's primary key;
* NUMERIC columns travel as strings (``decimal.handling.mode=string``): exact, and
  readable by :mod:`tidings.cdc.debezium` without the schema Connect would embed;
* registering is idempotent (``PUT /connectors/NAME/config``); a config Connect refuses
  raises :class:`ConnectError` with Connect's own message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8083"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class ConnectError(RuntimeError):
    """Connect refused a request or is unreachable; the message says which and why."""


def slot_name(name: str) -> str:
    """The replication slot (and publication) of connector ``name``."""
    return f"tidings_cdc_{name}"


def connector_config(
    name: str, database_url: str, tables: Iterable[str], topic_prefix: str
) -> dict[str, str]:
    """The Debezium PostgreSQL connector's config (see the module's rules)."""
    if not _NAME.match(name):
        raise ValueError(
            f"connector name {name!r}: use lower-case letters, digits and _ (it names a "
            "replication slot), starting with a letter"
        )
    tables = list(tables)
    bad = [t for t in tables if t.count(".") != 1]
    if not tables or bad:
        raise ValueError(f"tables are schema.table names, got {bad or 'none'}")
    url = urlsplit(database_url)
    if url.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"{database_url!r}: Debezium reads PostgreSQL: postgresql://user@host/db")
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": url.hostname or "127.0.0.1",
        "database.port": str(url.port or 5432),
        "database.user": unquote(url.username or "postgres"),
        "database.password": unquote(url.password or ""),
        "database.dbname": url.path.lstrip("/") or "postgres",
        "topic.prefix": topic_prefix,
        "table.include.list": ",".join(re.escape(t) for t in tables),
        "slot.name": slot_name(name),
        "publication.name": slot_name(name),
        "publication.autocreate.mode": "filtered",
        "decimal.handling.mode": "string",
        "snapshot.mode": "initial",
        "tombstones.on.delete": "true",
        # Debezium hands Connect a batch every poll.interval.ms (500 by default), which
        # was the median of a change's whole way to the shop's event (bench/cdc.py).
        "poll.interval.ms": "50",
        "transforms": "route",
        "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
        "transforms.route.regex": rf"{re.escape(topic_prefix)}\.[^.]+\.(.+)",
        "transforms.route.replacement": f"{topic_prefix}.$1",
    }


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        response = httpx.request(method, url, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise ConnectError(
            f"Kafka Connect at {url} is unreachable ({exc}); start it with "
            "`scripts/services up connect`"
        ) from None
    if response.status_code >= 400 and response.status_code != 404:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise ConnectError(f"Connect refused {method} {url} ({response.status_code}): {message}")
    return response


def preflight(database_url: str, tables: Iterable[str]) -> None:
    """ConnectError saying what is wrong if Debezium could not read ``tables`` there: the
    database unreachable, ``wal_level`` not ``logical``, or a table missing. Checked
    here because Connect 4.3 answers a Debezium config it cannot validate with a 500
    that has lost the reason."""
    import psycopg  # the postgres extra; only this tool needs it here

    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            row = conn.execute("SHOW wal_level").fetchone()
            if row is None or row[0] != "logical":
                raise ConnectError(
                    f"{database_url}: wal_level is {row and row[0]!r}; change data capture "
                    "needs wal_level=logical (scripts/services up postgres sets it)"
                )
            for table in tables:
                found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
                if found is None or found[0] is None:
                    raise ConnectError(f"{database_url}: no table {table}; create it first")
    except psycopg.Error as exc:
        raise ConnectError(f"{database_url}: cannot connect ({exc})".strip()) from None


def register(
    connect_url: str, name: str, database_url: str, *, tables: Iterable[str], topic_prefix: str
) -> dict[str, str]:
    """Create or update connector ``name`` (after :func:`preflight`); returns the config."""
    tables = list(tables)
    config = connector_config(name, database_url, tables, topic_prefix)
    preflight(database_url, tables)
    put_config(connect_url, name, config)
    return config


def put_config(connect_url: str, name: str, config: dict[str, str]) -> None:
    """Create connector ``name`` with ``config``, or replace its config (which restarts it)."""
    _request("PUT", f"{connect_url}/connectors/{name}/config", json=config)


def config_of(connect_url: str, name: str) -> dict[str, str] | None:
    """Connector ``name``'s config as Connect holds it, or None if it has no such one."""
    response = _request("GET", f"{connect_url}/connectors/{name}/config")
    if response.status_code == 404:
        return None
    found: dict[str, str] = response.json()
    return found


def states(connect_url: str, name: str) -> dict[str, Any] | None:
    """``{"connector": state, "tasks": [state, ...], "trace": first failure line | None}``,
    or None if Connect has no such connector."""
    response = _request("GET", f"{connect_url}/connectors/{name}/status")
    if response.status_code == 404:
        return None
    body = response.json()
    traces = [p.get("trace") for p in [body["connector"], *body["tasks"]] if p.get("trace")]
    return {
        "connector": body["connector"]["state"],
        "tasks": [t["state"] for t in body["tasks"]],
        "trace": traces[0].splitlines()[0] if traces else None,
    }


def connectors(connect_url: str) -> dict[str, dict[str, Any] | None]:
    """Every connector's :func:`states`, by name."""
    names = _request("GET", f"{connect_url}/connectors").json()
    return {name: states(connect_url, name) for name in sorted(names)}


def wait_running(connect_url: str, name: str, timeout: float = 60) -> None:
    """Wait until the connector and its task run; ConnectError with the failure if one
    failed, or if not running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = states(connect_url, name)
        if found and (found["connector"] == "FAILED" or "FAILED" in found["tasks"]):
            raise ConnectError(f"connector {name} failed: {found['trace']}")
        if found and found["connector"] == "RUNNING" and found["tasks"] == ["RUNNING"]:
            return
        time.sleep(0.5)
    raise ConnectError(f"connector {name} not running after {timeout:.0f}s: {found}")


def drop(connect_url: str, name: str, database_url: str, timeout: float = 180) -> None:
    """Delete connector ``name`` (if Connect has it), then drop its replication slot and
    publication once the slot is no longer in use: Connect stops the task asynchronously,
    and a task still creating its slot (which waits for the transactions open at that
    moment to end) finishes that first."""
    import psycopg  # the postgres extra; only this tool needs it here

    deadline = time.monotonic() + 60
    while True:  # 409: the worker is rebalancing (e.g. just restarted); it answers after
        try:
            _request("DELETE", f"{connect_url}/connectors/{name}")
            break
        except ConnectError as exc:
            if "409" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    slot = slot_name(name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is None:
                break
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                break
            time.sleep(0.3)
        else:
            raise ConnectError(
                f"replication slot {slot} still in use {timeout:.0f}s after deleting {name}; "
                "`scripts/services down connect` drops it once inactive"
            )
        conn.execute(f'DROP PUBLICATION IF EXISTS "{slot}"')
