"""Fuzzed records through the shop's real runtimes (TestApp: memory broker, SQLite stores)."""

from __future__ import annotations

import asyncio

from bench.fuzz import SERVICES, shop_seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.records import Record
from tidings.testing import TestApp
from tidings.testing.fuzz import Tally, consume, records, seed_records

SEEDS = seed_records(shop_seeds())


def test_every_record_ends_handled_skipped_or_dead_lettered() -> None:
    loop = asyncio.new_event_loop()
    app = TestApp(*SERVICES)
    loop.run_until_complete(app.__aenter__())
    total = Tally()
    try:

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(records(SEEDS), min_size=1, max_size=6))
        def example(batch: list[Record]) -> None:
            total.add(loop.run_until_complete(consume(app, batch, bound=30.0)))  # raises if not

        example()
        deep = Record(SEEDS[0].topic, 0, 0, "o1", b"[" * 100_000 + b"]" * 100_000, {}, 0.0)
        after = loop.run_until_complete(consume(app, [deep]))
        assert after.dead_lettered >= 1  # by each service reading shop.orders
        assert after.handled == 0
    finally:
        loop.run_until_complete(app.close())
        loop.close()
    assert total.cases > 0
    assert total.dead_lettered > 0
