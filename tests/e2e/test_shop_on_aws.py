"""The shop on AWS SNS+SQS and on EventBridge (moto's emulator) with PostgreSQL: the demo
command exits 0 with every invariant holding on each, and a run with services SIGKILLed
mid-stream on each. SQS keeps no
history, so the payments are read from a witness group made before the orders
(``tidings.testing.topics.witness``). Dummy credentials: the emulator takes any."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from shop_runs import POSTGRES, run_demo, run_with_kills

from shop.demo import Shop
from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require

AWS = "sqs+sns://127.0.0.1:4566?region=us-east-1"
EVENTBRIDGE = "eventbridge://127.0.0.1:4566?region=us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
    "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
}


PLATFORMS = [
    pytest.param(AWS, "aws-kill", "ak", id="sns-sqs"),
    pytest.param(EVENTBRIDGE, "eventbridge-kill", "ek", id="eventbridge"),
]


@pytest.mark.parametrize(("broker", "seed", "prefix"), PLATFORMS)
def test_demo_on_aws_and_postgres_exits_0_with_every_invariant(
    broker: str, seed: str, prefix: str, tmp_path: Path
) -> None:
    require(broker, POSTGRES)
    with fresh_schema(POSTGRES) as store:
        run_demo(broker, store, tmp_path, timeout=150, env=CREDENTIALS)


@pytest.mark.parametrize(("broker", "seed", "prefix"), PLATFORMS)
def test_shop_on_aws_survives_sigkill_of_inventory_and_billing(
    broker: str, seed: str, prefix: str, shop_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A killed member's messages come back once their visibility (5 s here) runs out.
    url = broker + "&visibility_timeout=5"
    require(url, POSTGRES)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with fresh_schema(POSTGRES) as store:
        shop: Shop = shop_factory(url, store, seed=seed)
        run_with_kills(shop, url, store, prefix, settle=120)
