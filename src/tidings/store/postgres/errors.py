"""What a PostgreSQL error means to the store contract, and URLs fit for messages."""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

# URLs fit for a log line or an error message: the framework's one redaction.
from tidings.redaction import redact as redact

Connection = psycopg.AsyncConnection[TupleRow]

START_HINT = "start it with `scripts/services up postgres` (or `make services`)"


def lost_race(exc: psycopg.Error) -> bool:
    """Did a concurrent transaction win (serialization failure, deadlock: SQLSTATE 40xxx)?"""
    return (exc.sqlstate or "").startswith("40")


def lost_server(exc: psycopg.Error, conn: Connection) -> bool:
    """Is this the connection or the server going away (not a statement failing)?

    ``conn.broken`` is not always set yet when the first statement after a
    ``pg_terminate_backend`` or a server restart fails, so the SQLSTATE counts too:
    class 08 (connection exception), 57P (operator intervention: shutdown, terminated),
    or an OperationalError with no SQLSTATE (raised by the client, not the server).
    """
    if conn.broken or conn.closed:
        return True
    state = exc.sqlstate or ""
    if state.startswith(("08", "57P")):
        return True
    return isinstance(exc, psycopg.OperationalError) and not state


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
