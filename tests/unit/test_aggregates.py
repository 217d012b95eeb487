"""Event-sourced aggregates: declaration checks, recording, and a service that uses them
through its context (TestApp: the SQLite store, the outbox and the runtime as in production)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tidings import Aggregate, Context, Event, Service, applies, upcaster
from tidings.envelope import utc_now
from tidings.eventsourcing import AggregateError
from tidings.store.base import NewEvent
from tidings.testing import TestApp


class Deposited(Event, topic="unit.wallets", key="wallet_id", version=2):
    wallet_id: str
    cents: int
    currency: str


@upcaster(Deposited, from_version=1)
def _in_euros(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


class Withdrawn(Event, topic="unit.wallets", key="wallet_id"):
    wallet_id: str
    cents: int


class DepositRequested(Event, topic="unit.wallet-requests", key="wallet_id"):
    wallet_id: str
    cents: int


class Wallet(Aggregate, snapshot_every=3):
    balance: int = 0
    currencies: list[str] = []

    def deposit(self, cents: int, currency: str = "EUR") -> None:
        self.record(Deposited(wallet_id=self.id, cents=cents, currency=currency))

    def withdraw(self, cents: int) -> None:
        if cents > self.balance:
            raise ValueError(f"wallet {self.id} holds {self.balance}, not {cents}")
        self.record(Withdrawn(wallet_id=self.id, cents=cents))

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.cents
        self.currencies = sorted({*self.currencies, event.currency})

    @applies(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.cents


def test_record_applies_and_keeps_events_until_saved() -> None:
    wallet = Wallet(id="w1")
    wallet.deposit(10)
    wallet.withdraw(4)
    assert (wallet.balance, wallet.version) == (6, 2)
    assert [type(e).__name__ for e in wallet.pending_events()] == ["Deposited", "Withdrawn"]
    with pytest.raises(ValueError, match="holds 6, not 7"):
        wallet.withdraw(7)
    assert wallet.version == 2 and len(wallet.pending_events()) == 2
    assert Wallet.stream_id("w1") == "Wallet:w1"
    assert Wallet.aggregate_info.snapshot_schema == "Wallet:1"


@pytest.mark.filterwarnings("ignore:Field name .version.")
def test_declarations_are_checked_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"Bad\.balance needs a default"):

        class Bad(Aggregate):
            balance: int

    with pytest.raises(TypeError, match=r"Clash\.version: the name is used by Aggregate"):

        class Clash(Aggregate):
            version: int = 0

    with pytest.raises(TypeError, match="snapshot_every must be a whole number from 1, not 0"):

        class Never(Aggregate, snapshot_every=0):
            pass

    with pytest.raises(TypeError, match="name must be a non-empty string without ':'"):

        class Colon(Aggregate, name="a:b"):
            pass

    with pytest.raises(TypeError, match="not an Event class"):
        applies(int)  # type: ignore[arg-type]


def test_apply_overridden_in_one_place_names_its_events() -> None:
    class Tally(Aggregate, events=[Deposited, Withdrawn]):
        net: int = 0

        def apply(self, event: Event) -> None:
            match event:
                case Deposited(cents=cents):
                    self.net += cents
                case Withdrawn(cents=cents):
                    self.net -= cents

    tally = Tally(id="t")
    tally.record(Deposited(wallet_id="t", cents=5, currency="EUR"))
    tally.record(Withdrawn(wallet_id="t", cents=2))
    assert tally.net == 3
    with pytest.raises(TypeError, match=r"Wallet does not apply DepositRequested: add a mutator"):
        Wallet(id="w").record(DepositRequested(wallet_id="w", cents=1))


service = Service("wallets", publishes=[Deposited, Withdrawn])
service.aggregate(Wallet)


@service.on
async def deposit(event: DepositRequested, ctx: Context) -> None:
    wallet = await ctx.load(Wallet, event.wallet_id) or Wallet(id=event.wallet_id)
    wallet.deposit(event.cents)
    await ctx.save(wallet)


async def test_a_handler_loads_and_saves_and_its_events_are_published() -> None:
    async with TestApp(service) as app:
        for cents in (5, 7, 11, 13):
            await app.publish(DepositRequested(wallet_id="w1", cents=cents))
        await app.drain()
        published = await app.published(Deposited)
        assert [d.cents for d in published] == [5, 7, 11, 13]
        wallet = await app.load(Wallet, "w1")
        async with app.unit_of_work(service) as ctx:
            past = await ctx.load(Wallet, "w1", version=2)
            assert await ctx.load(Wallet, "w2") is None
            with pytest.raises(ValueError, match="give a time zone"):
                await ctx.load(Wallet, "w1", at=datetime(2026, 1, 1))
        assert wallet is not None and (wallet.balance, wallet.version) == (36, 4)
        assert past is not None and (past.balance, past.version) == (12, 2)
        # The envelopes on the broker are the events in the stream: same ids.
        envelopes = await app.envelopes("unit.wallets")
        async with app.unit_of_work(service) as ctx:
            stream = await ctx._uow.read_stream(Wallet.stream_id("w1"))
        assert [e.id for e in envelopes] == [e.event_id for e in stream]


async def test_old_event_versions_in_a_stream_are_upcast_on_load() -> None:
    async with TestApp(service) as app:
        async with app.unit_of_work(service) as ctx:
            await ctx._uow.append(
                Wallet.stream_id("old"),
                0,
                [NewEvent("e1", "Deposited", 1, utc_now(), {"wallet_id": "old", "cents": 3})],
            )
        async with app.unit_of_work(service) as ctx:
            wallet = await ctx.load(Wallet, "old")
            assert wallet is not None and wallet.currencies == ["EUR"]
            await ctx._uow.append(
                Wallet.stream_id("odd"),
                0,
                [NewEvent("e2", "Deposited", 2, utc_now(), {"wallet_id": "odd"})],
            )
        with pytest.raises(AggregateError, match=r"Wallet:odd v1: cannot read Deposited"):
            async with app.unit_of_work(service) as ctx:
                await ctx.load(Wallet, "odd")


async def test_test_app_loads_only_declared_aggregates() -> None:
    class Undeclared(Aggregate):
        pass

    async with TestApp(service) as app:
        with pytest.raises(LookupError, match="no service in this TestApp declares aggregate"):
            await app.load(Undeclared, "x")
