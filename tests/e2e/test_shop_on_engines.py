"""The same shop code on Kafka and NATS JetStream with PostgreSQL, chosen only by URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require

POSTGRES = "postgresql://127.0.0.1:5432/tidings"


@pytest.mark.parametrize(
    "broker", ["kafka://127.0.0.1:9092", "nats://127.0.0.1:4222"], ids=["kafka", "nats"]
)
def test_demo_runs_unchanged_on_a_real_broker_and_postgres(broker: str, tmp_path: Path) -> None:
    require(broker, POSTGRES)
    with fresh_schema(POSTGRES) as store:  # stock and accounts of its own
        result = _demo(broker, store, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for check in (
        "every order ended Completed or Cancelled",
        "stock conserved",
        "no order charged twice",
        "every completed order was paid",
    ):
        assert f"✓ {check}" in result.stdout, result.stdout


def _demo(broker: str, store: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings",
            "demo",
            "--orders",
            "30",
            "--broker",
            broker,
            "--store",
            store,
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
    )
