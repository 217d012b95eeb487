"""Rate limits on the order API: 429 with Retry-After past the burst, then recovery."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from tests.apiguard.conftest import OrderApi

from tidings.apiguard import key_line, new_key

BURST = 3
WINDOW = 2  # seconds


@pytest.fixture(scope="module")
def limited(
    order_api: OrderApi, tmp_path_factory: pytest.TempPathFactory
) -> tuple[httpx.Client, dict[str, str]]:
    """The order API: keys for clients a and b, each allowed BURST requests per WINDOW."""
    tmp: Path = tmp_path_factory.mktemp("limited")
    keys = {"a": new_key(), "b": new_key()}
    (tmp / "keys").write_text("".join(key_line(c, k) + "\n" for c, k in keys.items()))
    api = order_api(
        {"TIDINGS_API_KEYS": str(tmp / "keys"), "TIDINGS_RATE_LIMIT": f"{BURST}/{WINDOW} seconds"}
    )
    return api, keys


def test_429_after_the_burst_then_recovery(limited: tuple[httpx.Client, dict[str, str]]) -> None:
    api, keys = limited
    a = {"X-API-Key": keys["a"]}
    started = time.monotonic()
    assert [api.get("/orders", headers=a).status_code for _ in range(BURST)] == [200] * BURST
    refused = api.get("/orders", headers=a)
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW
    assert f"limit {BURST}/{WINDOW} seconds; retry in" in refused.json()["error"]
    assert refused.headers["x-content-type-options"] == "nosniff"
    # Another client has a budget of its own.
    assert api.get("/orders", headers={"X-API-Key": keys["b"]}).status_code == 200
    time.sleep(max(0.0, started + retry_after + 0.2 - time.monotonic()))
    assert api.get("/orders", headers=a).status_code == 200


def test_unauthenticated_guessing_is_limited_per_address(
    limited: tuple[httpx.Client, dict[str, str]],
) -> None:
    api, _ = limited
    time.sleep(WINDOW)  # a fresh window for this address
    statuses = [
        api.get("/orders", headers={"X-API-Key": new_key()}).status_code for _ in range(BURST + 2)
    ]
    assert statuses[:BURST] == [401] * BURST
    assert statuses[BURST:] == [429, 429]
