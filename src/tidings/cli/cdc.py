"""``tidings cdc``: Debezium connectors on Kafka Connect (change data capture).

tidings cdc register legacy --tables legacy.cust,legacy.prod,legacy.stk_adj
tidings cdc status
tidings cdc drop legacy          # the connector, its replication slot and publication
"""

from __future__ import annotations

import typer

from tidings.cdc import connect
from tidings.cli.common import console, fail

cdc_app = typer.Typer(help="Change data capture: Debezium connectors.", no_args_is_help=True)

ConnectUrl = typer.Option(
    connect.DEFAULT_URL, "--connect", envvar="TIDINGS_CONNECT_URL", help="Kafka Connect's REST API"
)
Database = typer.Option(
    "postgresql://postgres@127.0.0.1:5432/tidings",
    "--database",
    envvar="TIDINGS_CDC_DATABASE",
    help="The PostgreSQL database Debezium reads (it needs wal_level=logical)",
)


@cdc_app.command("register")
def register(
    name: str = typer.Argument(..., help="Connector name (also names its replication slot)"),
    tables: str = typer.Option(
        "legacy.cust,legacy.prod,legacy.stk_adj",
        help="schema.table,... to capture (default: the legacy back office's)",
    ),
    topic_prefix: str = typer.Option(
        "legacy", help="Change topics are <prefix>.<table> (shop.acl reads SHOP_LEGACY_TOPICS)"
    ),
    database: str = Database,
    connect_url: str = ConnectUrl,
    wait: float = typer.Option(60, help="Seconds to wait until it runs (0: do not wait)"),
) -> None:
    """Register (or update) a Debezium PostgreSQL connector for TABLES."""
    try:
        connect.register(
            connect_url,
            name,
            database,
            tables=[t.strip() for t in tables.split(",") if t.strip()],
            topic_prefix=topic_prefix,
        )
        if wait:
            connect.wait_running(connect_url, name, wait)
    except (ValueError, connect.ConnectError) as exc:
        raise fail(str(exc)) from None
    console.print(
        f"connector {name}: {tables} -> {topic_prefix}.<table> (slot {connect.slot_name(name)})",
        highlight=False,
    )


@cdc_app.command("status")
def status(connect_url: str = ConnectUrl) -> None:
    """Each connector's state and its tasks'; exit 1 if one failed."""
    if report_connectors(connect_url):
        raise typer.Exit(1)


def report_connectors(connect_url: str) -> bool:
    """Print each connector's state and its tasks' (and the first line of a failure);
    True if one failed. Shared by ``tidings cdc status`` and ``tidings lag --connect``."""
    try:
        found = connect.connectors(connect_url)
    except connect.ConnectError as exc:
        raise fail(str(exc)) from None
    failed = False
    for name, state in found.items():
        if state is None:
            continue
        tasks = " ".join(state["tasks"]) or "no tasks"
        console.print(f"{name}: {state['connector']}, tasks: {tasks}", highlight=False)
        if state["trace"]:
            failed = True
            console.print(f"  failed: {state['trace']}", highlight=False)
    if not found:
        console.print("no connectors")
    return failed


@cdc_app.command("drop")
def drop(name: str, database: str = Database, connect_url: str = ConnectUrl) -> None:
    """Delete a connector and drop its replication slot and publication."""
    try:
        connect.drop(connect_url, name, database)
    except connect.ConnectError as exc:
        raise fail(str(exc)) from None
    console.print(f"connector {name} deleted, slot {connect.slot_name(name)} dropped")
