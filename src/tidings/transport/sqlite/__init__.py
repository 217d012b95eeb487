"""The embedded durable log in one SQLite file: ``sqlite:///path/to/log.db`` (see :mod:`.log`)."""

from tidings.transport.sqlite.log import SQLiteLog

__all__ = ["SQLiteLog"]
