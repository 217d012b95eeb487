from __future__ import annotations

from collections.abc import Iterator

import pytest

from shop.migration import KAFKA, POSTGRES, LegacySite
from tidings.cdc.connect import DEFAULT_URL
from tidings.testing.servers import require

CONNECT = DEFAULT_URL


@pytest.fixture(scope="module")
def site() -> Iterator[LegacySite]:
    """A legacy site of its own per test module (schema, connector, slot, topics unique
    to this run), dropped afterwards: registering one costs ~20s, so tests share it."""
    require(KAFKA, POSTGRES, "kafka-connect://127.0.0.1:8083")
    with LegacySite.fresh(POSTGRES, CONNECT) as made:
        yield made
