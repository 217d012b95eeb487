from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shop.demo import Shop
from tidings.testing import free_port
from tidings.testing.servers import require

BROKERS = [
    pytest.param("sqlite:///{tmp}/log.db", id="sqlite"),
    pytest.param("kafka://127.0.0.1:9092", id="kafka"),
    pytest.param("nats://127.0.0.1:4222", id="nats"),
]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each broker in turn: a fresh SQLite log, or the running Kafka or NATS."""
    template: str = request.param
    require(template)
    return template.format(tmp=tmp_path)


@pytest.fixture
def shop_factory(tmp_path: Path) -> Iterator[type[Shop]]:
    """Make shops whose processes are all stopped when the test ends."""
    shops: list[Shop] = []

    def make(
        broker: str | None = None,
        store: str | None = None,
        seed: str = "e2e",
        saga: str = "choreography",
    ) -> Shop:
        shop = Shop(
            tmp_path,
            broker or f"sqlite:///{tmp_path}/log.db",
            store or f"sqlite:///{tmp_path}/{{service}}.db",
            free_port(),
            seed,
            saga=saga,
        )
        shops.append(shop)
        return shop

    yield make
    for shop in shops:
        shop.stop()


@pytest.fixture(scope="session")
def secured_users(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``secured_users(scheme)``: the passwords directory of the shop's users on the
    secured ``kafka`` or ``nats``, their ACLs applied by `tidings acl apply` once per
    session (and checked: no drift). Skips (fails under CI) without the secured server."""
    from tidings.testing.secure import acl, require_secure

    done: dict[str, Path] = {}

    def applied(scheme: str) -> Path:
        require_secure(scheme)
        if scheme not in done:
            passwords = tmp_path_factory.mktemp(f"{scheme}-passwords")
            acl("apply", scheme, passwords)
            assert "no drift" in acl("check", scheme, passwords)
            done[scheme] = passwords
        return done[scheme]

    return applied
