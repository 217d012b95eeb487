from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shop.demo import Shop
from tidings.testing import free_port


@pytest.fixture
def shop_factory(tmp_path: Path) -> Iterator[type[Shop]]:
    """Make shops whose processes are all stopped when the test ends."""
    shops: list[Shop] = []

    def make(broker: str | None = None, store: str | None = None, seed: str = "e2e") -> Shop:
        shop = Shop(
            tmp_path,
            broker or f"sqlite:///{tmp_path}/log.db",
            store or f"sqlite:///{tmp_path}/{{service}}.db",
            free_port(),
            seed,
        )
        shops.append(shop)
        return shop

    yield make
    for shop in shops:
        shop.stop()
