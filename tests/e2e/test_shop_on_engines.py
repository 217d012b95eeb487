"""The same shop code on Kafka and NATS JetStream with PostgreSQL, chosen only by URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from shop_runs import POSTGRES, run_demo

from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require


@pytest.mark.parametrize(
    "broker", ["kafka://127.0.0.1:9092", "nats://127.0.0.1:4222"], ids=["kafka", "nats"]
)
def test_demo_runs_unchanged_on_a_real_broker_and_postgres(broker: str, tmp_path: Path) -> None:
    require(broker, POSTGRES)
    with fresh_schema(POSTGRES) as store:  # stock and accounts of its own
        run_demo(broker, store, tmp_path)
