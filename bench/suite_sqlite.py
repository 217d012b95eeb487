"""The embedded SQLite log against raw sqlite3, and the shop end to end on it."""

from __future__ import annotations

from typing import Any

from bench import shop, sqlite_log


def run() -> dict[str, Any]:
    result: dict[str, Any] = dict(sqlite_log.run())
    result.update(shop.run(rate=200.0))  # the target: p99 < 250 ms at 200 orders/s
    return result
