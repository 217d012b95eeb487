"""Memory of the shop under sustained load: the RSS of each service process as orders add up.

The shop runs as three processes (order, inventory, billing) on the embedded SQLite log
and SQLite stores. 10,000 orders are posted by 32 clients, as fast as the shop takes
them; after 2,000 and after 10,000 have settled (OrderCompleted or OrderCancelled in the
log), the RSS of each process is read (``VmRSS``), so growth between the two is visible.
The inbox rows of each service's store are counted at the end: they are pruned only past
the dedupe window (7 days), so within a run they grow with the events handled, on disk,
not in the processes' memory.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from bench.shop import _completions, _post_all, rss_mib
from shop.demo import SERVICES, Shop
from tidings.runtime import DEDUPE_WINDOW
from tidings.testing import free_port


def run(orders: int = 10_000, checkpoints: tuple[int, ...] = (2_000, 10_000)) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-memory-"))
    broker = f"sqlite:///{workdir}/log.db"
    shop = Shop(workdir, broker, f"sqlite:///{workdir}/{{service}}.db", free_port(), "bench")
    shop.env.update(
        SHOP_STOCK="widget=1000000", SHOP_PAYMENT_FAILURE_RATE="0", SHOP_CREDIT_LIMITS=""
    )
    base = f"http://127.0.0.1:{shop.port}"
    rss: dict[str, dict[str, float]] = {}
    shop.start()
    try:
        shop.wait_ready()
        asyncio.run(_post_all(base, 50, 8, None))  # warm up connections, caches and files
        rss["after_warm_up"] = rss_mib(shop)
        placed = 0
        for checkpoint in (*[c for c in checkpoints if c < orders], orders):
            ids = asyncio.run(_post_all(base, checkpoint - placed, 32, None))
            asyncio.run(_completions(broker, set(ids), 600))
            placed = checkpoint
            rss[f"after_{checkpoint}_orders"] = rss_mib(shop)
    finally:
        shop.stop()
    first, last = rss[f"after_{checkpoints[0]}_orders"], rss[f"after_{orders}_orders"]
    return {
        "orders": orders,
        "rss_mib": rss,
        f"rss_growth_mib_{checkpoints[0]}_to_{orders}_orders": {
            name: round(last[name] - first[name], 1) for name in last
        },
        "inbox_rows_at_end": _inbox_rows(workdir),
        "dedupe_window_days": DEDUPE_WINDOW / 86400,
    }


def _inbox_rows(workdir: Path) -> dict[str, int]:
    rows: dict[str, int] = {}
    for name in SERVICES:
        path = workdir / f"{name}.db"
        if path.exists():
            with sqlite3.connect(path) as conn:
                rows[name] = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
    return rows


if __name__ == "__main__":
    print(run())
