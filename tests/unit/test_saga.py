"""The order saga, orchestrated: its pure transitions, and the saga machinery in process
(TestApp: real SQLite stores, the memory broker, timers fired by hand)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from shop import billing, inventory, orchestrator, order, order_view
from shop.events import (
    ORDERS,
    CancelPayment,
    ChargePayment,
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentProcessed,
    PaymentRefunded,
    PlaceOrder,
    ReleaseInventory,
    ReserveInventory,
)
from shop.orchestrator import OrderSaga, saga
from tidings.envelope import utc_now
from tidings.saga import answer, answered
from tidings.store.base import ConcurrencyConflict
from tidings.testing import TestApp
from tidings.timers import TIMERS

LINES = [OrderLine(sku="widget", quantity=2)]


@pytest.fixture(autouse=True)
def orchestration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_SAGA", "orchestration")
    monkeypatch.setenv("SHOP_STEP_TIMEOUT", "5")
    monkeypatch.setenv("SHOP_STOCK", "widget=10")
    monkeypatch.setenv("SHOP_CREDIT_LIMITS", "c-broke=0")


def placed(order_id: str = "o1", customer: str = "c1", saga: str = "orchestration") -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id, customer_id=customer, lines=LINES, amount_cents=500, saga=saga
    )


# -- the state machine, pure ---------------------------------------------------------------
def test_a_placed_order_reserves_then_charges_then_completes() -> None:
    s = OrderSaga(id="o1")
    orchestrator.placed(placed(), s)
    sent, expectation = s.take_effects()
    assert [type(m) for m in sent] == [ReserveInventory]
    assert sent[0].command_id == "o1/reserve"  # type: ignore[attr-defined]
    assert expectation is not None and expectation.step == "reserving"
    assert expectation.replies == (InventoryReserved, InventoryRejected)
    assert expectation.within == 5.0
    s.step = "reserving"
    orchestrator.reserved(
        InventoryReserved(order_id="o1", customer_id="c1", lines=LINES, amount_cents=500), s
    )
    sent, expectation = s.take_effects()
    assert [type(m) for m in sent] == [ChargePayment]
    assert expectation is not None and expectation.step == "charging"
    orchestrator.paid(
        PaymentProcessed(order_id="o1", payment_id="p1", customer_id="c1", amount_cents=500), s
    )
    sent, _ = s.take_effects()
    assert sent == [OrderCompleted(order_id="o1", payment_id="p1")]
    assert s.finished and s.outcome == "completed"


def test_a_timeout_compensates_by_step() -> None:
    reserving = OrderSaga(id="o1", step="reserving")
    orchestrator.timed_out(reserving)
    sent, expectation = reserving.take_effects()
    assert [type(m) for m in sent] == [ReleaseInventory]  # billing was never asked
    assert expectation is not None and expectation.step == "releasing"
    charging = OrderSaga(id="o1", step="charging")
    orchestrator.timed_out(charging)
    sent, _ = charging.take_effects()
    assert [type(m) for m in sent] == [ReleaseInventory, CancelPayment]
    assert charging.reason == "timed out"
    releasing = OrderSaga(id="o1", step="releasing", reason="timed out")
    orchestrator.timed_out(releasing)  # the compensation is sent again, same command id
    sent, expectation = releasing.take_effects()
    assert [m.command_id for m in sent] == ["o1/release"]  # type: ignore[attr-defined]
    assert expectation is not None and expectation.step == "releasing"


async def test_an_order_placed_in_choreography_starts_no_saga() -> None:
    async with TestApp(orchestrator.service, inventory.service) as app:
        await app.publish(placed(saga="choreography"))  # and inventory reacts to it itself
        await app.drain()
        assert await app.get(saga.collection, "o1") is None
        assert await app.published(ReserveInventory) == []
        assert [r.order_id for r in await app.published(InventoryReserved)] == ["o1"]


def test_a_finished_saga_sends_nothing_more() -> None:
    s = OrderSaga(id="o1", finished=True, outcome="completed")
    with pytest.raises(RuntimeError, match="finished"):
        s.send(ReleaseInventory(command_id="x", order_id="o1", reason="r"))


# -- in process: the machinery on real stores -------------------------------------------------
@pytest.fixture
async def app() -> AsyncIterator[TestApp]:
    async with TestApp(orchestrator.service, inventory.service, billing.service) as running:
        yield running


async def state(app: TestApp, order_id: str = "o1") -> OrderSaga:
    found = await app.get(saga.collection, order_id)
    assert found is not None
    return found  # type: ignore[no-any-return]


async def test_the_saga_completes_an_order(app: TestApp) -> None:
    await app.publish(placed())
    await app.drain()
    s = await state(app)
    assert (s.step, s.finished, s.outcome, s.timer) == ("completed", True, "completed", None)
    assert [h.step_to for h in s.history] == ["reserving", "charging", "completed"]
    assert [o.order_id for o in await app.published(OrderCompleted)] == ["o1"]
    assert (await app.get(inventory.stock, "widget")).available == 8
    async with app.unit_of_work(orchestrator.service) as ctx:
        assert await ctx.list(TIMERS) == []  # each step's timer was disarmed


async def test_a_failed_payment_releases_the_stock(app: TestApp) -> None:
    await app.publish(placed(customer="c-broke"))
    await app.drain()
    s = await state(app)
    assert s.outcome == "cancelled" and s.reason is not None
    assert s.reason.startswith("payment failed: credit limit")
    assert [h.step_to for h in s.history] == ["reserving", "charging", "releasing", "cancelled"]
    assert (await app.get(inventory.stock, "widget")).available == 10
    assert [c.reason for c in await app.published(OrderCancelled)] == [s.reason]


async def test_billing_that_never_answers_times_the_order_out() -> None:
    async with TestApp(orchestrator.service, inventory.service) as app:
        await app.publish(placed())
        await app.drain()
        s = await state(app)
        assert s.step == "charging" and s.deadline is not None and s.timer is not None
        runtime = app.runtime(orchestrator.service)
        assert await runtime.fire_timers(s.deadline - timedelta(seconds=1)) == 0  # not yet
        assert await runtime.fire_timers(s.deadline + timedelta(seconds=1)) == 1
        await app.drain()
        s = await state(app)
        assert (s.outcome, s.reason) == ("cancelled", "timed out")
        assert [h.step_to for h in s.history] == [
            "reserving", "charging", "releasing", "cancelled",
        ]  # fmt: skip
        assert [c.reason for c in await app.published(OrderCancelled)] == ["timed out"]
        assert [c.order_id for c in await app.published(CancelPayment)] == ["o1"]
        assert (await app.get(inventory.stock, "widget")).available == 10


async def test_a_timer_firing_twice_or_late_is_ignored() -> None:
    async with TestApp(orchestrator.service, inventory.service) as app:
        await app.publish(placed())
        await app.drain()
        armed = (await state(app)).timer
        assert armed is not None
        async with app.unit_of_work(orchestrator.service) as ctx:
            timer = await ctx.get(TIMERS, armed)
        assert timer is not None
        loop = app.runtime(orchestrator.service).timers
        assert await loop.fire(armed) is True
        assert await loop.fire(armed) is False  # gone: fired once
        await app.drain()
        assert (await state(app)).outcome == "cancelled"
        # The same timer put back (a second firing racing the first): the saga ignores it.
        async with app.unit_of_work(orchestrator.service) as ctx:
            await ctx.put(TIMERS, armed, timer)
        assert await loop.fire(armed) is True
        s = await state(app)
        assert s.history[-1].note == "ignored: finished (cancelled)"
        assert len(await app.published(OrderCancelled)) == 1


async def test_a_reply_for_a_finished_saga_is_ignored(app: TestApp) -> None:
    await app.publish(placed())
    await app.drain()
    late = PaymentProcessed(order_id="o1", payment_id="p-late", customer_id="c1", amount_cents=1)
    await app.publish(late)
    await app.publish(
        PaymentProcessed(order_id="nobody", payment_id="p", customer_id="c", amount_cents=1)
    )
    await app.drain()
    s = await state(app)
    assert s.history[-1].note == "ignored: finished (completed)"
    assert len(await app.published(OrderCompleted)) == 1
    assert await app.get(saga.collection, "nobody") is None  # no saga made by a reply
    assert await app.dead_letters(orchestrator.service) == []


async def test_a_stale_version_conflicts_and_the_retry_finds_nothing_to_do(app: TestApp) -> None:
    await app.publish(placed())
    await app.drain()
    async with app.unit_of_work(orchestrator.service) as ctx:
        found = await ctx.get_versioned(saga.collection, "o1")
    assert found is not None
    stale = found.value.model_copy(update={"step": "charging"})
    with pytest.raises(ConcurrencyConflict):
        async with app.unit_of_work(orchestrator.service) as ctx:
            await ctx.put(saga.collection, "o1", stale, expected_version=found.version - 1)
    reply = PaymentFailed(order_id="o1", customer_id="c1", reason="late")
    async with app.unit_of_work(orchestrator.service) as ctx:  # the retry, on the new state
        assert await saga.deliver(reply, ctx) == "ignored: finished (completed)"


async def test_a_command_sent_twice_is_acted_on_once() -> None:
    async with TestApp(inventory.service) as app:
        command = ReserveInventory(
            command_id="o9/reserve", order_id="o9", customer_id="c1", lines=LINES, amount_cents=1
        )
        first = await app.publish(command)
        again = await app.publish(command)  # two records, two envelope ids, one command id
        assert first.id != again.id
        await app.drain()
        replies = await app.published(InventoryReserved)
        assert [r.order_id for r in replies] == ["o9", "o9"]  # answered twice, the same way
        assert replies[0] == replies[1]
        assert (await app.get(inventory.stock, "widget")).available == 8  # taken once


async def test_commands_for_an_order_never_seen_get_a_defined_answer() -> None:
    async with TestApp(inventory.service, billing.service) as app:
        await app.publish(
            ReleaseInventory(command_id="o7/release", order_id="o7", reason="timed out")
        )
        await app.publish(CancelPayment(command_id="o7/cancel", order_id="o7", reason="timed out"))
        await app.drain()
        assert await app.published(InventoryReleased) == [
            InventoryReleased(order_id="o7", lines=[], reason="timed out", saga="orchestration")
        ]
        # Coming after their cancellation, the forward commands are refused, not done.
        await app.publish(
            ReserveInventory(
                command_id="o7/reserve", order_id="o7", customer_id="c1", lines=LINES,
                amount_cents=500,
            )
        )  # fmt: skip
        await app.publish(
            ChargePayment(command_id="o7/charge", order_id="o7", customer_id="c1", amount_cents=5)
        )
        await app.drain()
        assert [r.reason for r in await app.published(InventoryRejected)] == [
            "order released before reserving"
        ]
        assert [f.reason for f in await app.published(PaymentFailed)] == ["cancelled: timed out"]
        assert (await app.get(inventory.stock, "widget")).available == 10
        assert await app.dead_letters(inventory.service) == []
        assert await app.dead_letters(billing.service) == []


async def test_a_charge_cancelled_after_it_was_taken_is_refunded() -> None:
    async with TestApp(billing.service) as app:
        await app.publish(
            ChargePayment(command_id="o5/charge", order_id="o5", customer_id="c1", amount_cents=700)
        )
        await app.publish(CancelPayment(command_id="o5/cancel", order_id="o5", reason="timed out"))
        await app.drain()
        [paid] = await app.published(PaymentProcessed)
        [refund] = await app.published(PaymentRefunded)
        assert (refund.payment_id, refund.amount_cents) == (paid.payment_id, 700)
        account = await app.load(billing.Account, "c1")
        assert account is not None and account.spent_cents == 0 and account.refunded == ["o5"]


async def test_a_timer_is_due_in_key_order() -> None:
    from tidings.timers import due_of, new_timer

    now = utc_now()
    early = new_timer("k", "a", after=1, now=now)
    late = new_timer("k", "a", after=10, now=now)
    assert early.key < late.key
    assert abs((due_of(late.key) - now).total_seconds() - 10) < 1e-3
    with pytest.raises(ValueError, match="exactly one"):
        new_timer("k", "a", now=now)


async def test_a_command_answered_meanwhile_conflicts_instead_of_acting_twice() -> None:
    # Two deliveries of one command id handled at once both found no answer; the one that
    # commits second must not commit what it did (its retry then finds the answer).
    async with TestApp(inventory.service) as app:
        command = ReserveInventory(
            command_id="o8/reserve", order_id="o8", customer_id="c1", lines=LINES, amount_cents=1
        )
        async with app.unit_of_work(inventory.service) as ctx:
            assert not await answered(ctx, command)
            await answer(ctx, command, None)
        with pytest.raises(ConcurrencyConflict):
            async with app.unit_of_work(inventory.service) as ctx:
                await answer(ctx, command, None)  # as if it had looked before the first


# -- the mode is the order's, not the process's ---------------------------------------------
async def _place(app: TestApp) -> str:
    command = PlaceOrder(customer_id="c1", lines=LINES)
    async with app.unit_of_work(order.service) as ctx:
        return (await order.place_order(command, ctx)).order_id


async def _order(app: TestApp, order_id: str) -> order_view.Order:
    found = await app.read(order_view.view, lambda view: order_view.find(view, order_id))
    assert found is not None, f"{order_id} is not in the order view"
    return found


async def test_a_choreography_order_completes_under_processes_set_to_orchestration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The order service placed it in choreography; billing and the order service were
    # then started with SHOP_SAGA=orchestration. Billing must still charge it on
    # InventoryReserved (nobody will send it a ChargePayment) and the order must end.
    async with TestApp(order.service, inventory.service, billing.service) as app:
        monkeypatch.setenv("SHOP_SAGA", "choreography")
        order_id = await _place(app)
        monkeypatch.setenv("SHOP_SAGA", "orchestration")
        await app.drain()
        assert (await _order(app, order_id)).status == "COMPLETED"
        assert [p.order_id for p in await app.published(PaymentProcessed)] == [order_id]
        assert [c.order_id for c in await app.published(OrderCompleted)] == [order_id]


async def test_an_orchestration_order_runs_once_under_processes_set_to_choreography(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Placed in orchestration; the other processes were started in choreography. They
    # must leave the order to its saga: one charge, one end, and the order service
    # follows the saga's end instead of deciding one of its own.
    async with TestApp(
        order.service, orchestrator.service, inventory.service, billing.service
    ) as app:
        order_id = await _place(app)  # SHOP_SAGA=orchestration (the module's fixture)
        monkeypatch.setenv("SHOP_SAGA", "choreography")
        await app.drain()
        assert (await state(app, order_id)).outcome == "completed"
        assert [p.order_id for p in await app.published(PaymentProcessed)] == [order_id]
        ended_type = OrderCompleted.message_info.type
        [ended] = [e for e in await app.envelopes(ORDERS) if e.type == ended_type]
        assert ended.source == "orchestrator"  # the saga's end, not one of the order service
        assert (await _order(app, order_id)).status == "COMPLETED"
        assert (await app.get(inventory.stock, "widget")).available == 8
