"""What a chaos run (:mod:`bench.chaos`) checks at the end, from the broker and the database
directly (not through the services' HTTP views), and the timings it derives.

* every accepted order settled (Completed or Cancelled in the order service's order view);
  ``lost`` counts accepted orders that did not, or that the state does not hold;
* no order charged twice: the distinct PaymentProcessed ids per order in billing's topic;
* stock conserved, every completed order paid and no cancelled one
  (:func:`shop.invariants.report` over every order the state holds);
* dead letters: those of each consumer group, with their reasons;
* consumer lag: end offset minus committed offset of every group, waited for until zero.

Timings come from the events in ``shop.orders``: placed at OrderPlaced's time, settled at
the first OrderCompleted / OrderCancelled (both stamped by the order service: one clock).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.stats import percentile
from shop import order_view
from shop.invariants import payments_in_log, report
from tidings.cli.common import opened_transport
from tidings.reliability.deadletter import read_dead_letters
from tidings.testing import envelopes, projected

SETTLED = ("COMPLETED", "CANCELLED")


async def wait_settled(store: str, accepted: list[str], timeout: float) -> dict[str, Any]:
    """Every order in the state once all ``accepted`` ones settled (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await projected(store, order_view.view, order_view.orders)
        orders = {k: o for k, o in rows.items() if o.placed_at is not None}  # placed here
        open_ = [i for i in accepted if i not in orders or orders[i].status not in SETTLED]
        if not open_ or time.monotonic() > deadline:
            return {k: o.summary() for k, o in orders.items()}
        await asyncio.sleep(2)


async def lag(broker: str, timeout: float = 60) -> dict[str, int]:
    """Lag per consumer group, waited for until every group's is zero (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    async with opened_transport(broker) as transport:
        while True:
            ends = {
                (t.name, p): o for t in await transport.topics() for p, o in t.end_offsets.items()
            }
            lags = {}
            for group in await transport.groups():
                committed = await transport.committed(group)
                lags[group] = sum(ends.get(tp, o) - o for tp, o in committed.items())
            if not any(lags.values()) or time.monotonic() > deadline:
                return lags
            await asyncio.sleep(1)


async def dead_letters(broker: str, groups: list[str]) -> list[dict[str, Any]]:
    async with opened_transport(broker) as transport:
        found = []
        for group in groups:
            for letter in await read_dead_letters(transport, group):
                found.append({"group": group, "topic": letter.topic, "reason": letter.reason,
                              "kind": str(letter.kind), "error": letter.error})  # fmt: skip
        return found


async def timings(broker: str) -> dict[str, tuple[float, float]]:
    """order id -> (placed, settled) times (seconds since the epoch) from ``shop.orders``."""
    placed: dict[str, float] = {}
    settled: dict[str, float] = {}
    for env in await envelopes(broker, "shop.orders"):
        order_id = str(env.data.get("order_id"))
        if env.type == "OrderPlaced":
            placed.setdefault(order_id, env.time.timestamp())
        elif env.type in ("OrderCompleted", "OrderCancelled"):
            settled.setdefault(order_id, env.time.timestamp())
    return {i: (placed[i], settled[i]) for i in settled if i in placed}


def verify(
    broker: str,
    store: str,
    accepted: list[str],
    before: dict[str, int],
    after: dict[str, int],
    final: dict[str, Any],
) -> dict[str, Any]:
    """The counts of the run's verdict (see the module docstring)."""
    payments = asyncio.run(payments_in_log(broker))
    invariants = report(final, before, after, payments, 0.0)
    settled = [i for i in accepted if i in final and final[i]["status"] in SETTLED]
    groups = [order_view.SERVICE, "inventory", "billing"]
    return {
        "accepted": len(accepted),
        "settled": len(settled),
        "lost": len(accepted) - len(settled),
        "double_charged": sum(1 for i in final if len(payments.get(i, ())) > 1),
        "orders_in_state": len(final),
        "completed": sum(1 for o in final.values() if o["status"] == "COMPLETED"),
        "cancelled": sum(1 for o in final.values() if o["status"] == "CANCELLED"),
        "invariants_hold": invariants,
        "dead_letters": asyncio.run(dead_letters(broker, groups)),
        "lag": asyncio.run(lag(broker)),
    }


def rounded_percentile(values: list[float], q: int) -> float | None:
    return round(percentile(values, q), 1) if values else None


def longest_stall(times: list[tuple[float, float]], start: float, end: float) -> float:
    """The longest time within [start, end] in which some order was waiting (placed, not
    settled) and none settled, in seconds; ``times`` are (placed, settled) pairs."""
    by_settled = sorted(times, key=lambda t: t[1])
    waiting_since = [0.0] * len(by_settled)  # earliest placing among those settled later
    earliest = float("inf")
    for i in range(len(by_settled) - 1, -1, -1):
        earliest = min(earliest, by_settled[i][0])
        waiting_since[i] = earliest
    longest, previous = 0.0, float("-inf")
    for i, (_, settled) in enumerate(by_settled):
        gap_start = max(previous, waiting_since[i], start)
        gap_end = min(settled, end)
        longest = max(longest, gap_end - gap_start)
        previous = settled
    return longest


OWN_AFTER_S = 30.0  # a fault's own window runs this long past its heal (a session timeout's wait)


def fault_effects(
    faults: list[dict[str, Any]], times: dict[str, tuple[float, float]], t0: float
) -> dict[str, Any]:
    """Per fault: the longest stall of settlements from injection until the orders placed
    during it had all settled (``stall_s``; ``recovery_s`` is that time, from injection),
    the longest in its own window (``own_stall_s``: injection to heal + ``OWN_AFTER_S``,
    cut at the next fault's injection, so a later fault's stall is not counted again, as
    it is in ``stall_s`` when a backlog makes recoveries overlap); and p99 latency of
    orders placed during a fault (injection to heal + 5 s) against the others."""
    during: list[float] = []
    calm: list[float] = []
    windows = [
        (t0 + f["started"], t0 + f["healed"] + 5) for f in faults if f["started"] is not None
    ]
    for placed, settled in times.values():
        latency_ms = (settled - placed) * 1000
        (during if any(a <= placed <= b for a, b in windows) else calm).append(latency_ms)
    injected = sorted(t0 + f["started"] for f in faults if f["started"] is not None)
    for fault in faults:
        if fault["started"] is None:
            continue
        start, healed = t0 + fault["started"], t0 + fault["healed"]
        own_end = min([healed + OWN_AFTER_S, *(t for t in injected if t > start)])
        fault["own_stall_s"] = round(longest_stall(list(times.values()), start, own_end), 1)
        caught = [s for p, s in times.values() if start <= p <= healed]
        drained = max([healed, *caught])
        fault["recovery_s"] = round(drained - start, 1)
        fault["stall_s"] = round(longest_stall(list(times.values()), start, drained), 1)
    return {
        "latency_ms_p50_calm": rounded_percentile(calm, 50),
        "latency_ms_p99_calm": rounded_percentile(calm, 99),
        "latency_ms_p50_during_faults": rounded_percentile(during, 50),
        "latency_ms_p99_during_faults": rounded_percentile(during, 99),
        "orders_placed_during_faults": len(during),
    }
