"""``tidings demo shop.migration`` end to end: exit 0, every check printed as held."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shop.migration import KAFKA, POSTGRES
from tidings.testing.servers import require

CHECKS = (
    "reached the order service's catalog",
    "place-order served by the legacy app",
    "route place-order moved to the new order service",
    "order through the facade completed in the shop",
    "the next order took the new legacy price",
    "an order over the legacy credit limit was declined by billing",
    "the same order was paid",
    "was published as StockAdjusted",
    "inventory's shelf took the adjustment once",
)


def test_the_migration_demo_runs_end_to_end(tmp_path: Path) -> None:
    require(KAFKA, POSTGRES, "kafka-connect://127.0.0.1:8083")
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "demo", "shop.migration", "--broker", KAFKA],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout, result.stdout
    for check in CHECKS:
        assert check in result.stdout, result.stdout
