"""The shop on RabbitMQ with PostgreSQL: the demo command, and a run with services SIGKILLed
mid-stream. RabbitMQ keeps no history, so the payments are read from a witness group made
before the orders (``tidings.testing.topics.witness``)."""

from __future__ import annotations

from pathlib import Path

from shop_runs import POSTGRES, run_demo, run_with_kills

from shop.demo import Shop
from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


def test_demo_on_rabbitmq_and_postgres_exits_0_with_every_invariant(tmp_path: Path) -> None:
    require(RABBITMQ, POSTGRES)
    with fresh_schema(POSTGRES) as store:
        run_demo(RABBITMQ, store, tmp_path)


def test_shop_on_rabbitmq_survives_sigkill_of_inventory_and_billing(shop_factory) -> None:
    require(RABBITMQ, POSTGRES)
    with fresh_schema(POSTGRES) as store:
        shop: Shop = shop_factory(RABBITMQ, store, seed="rabbit-kill")
        run_with_kills(shop, RABBITMQ, store, "rk", settle=90)
