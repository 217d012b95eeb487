"""What must hold after any run of the shop, checked from outside the services.

* every order ends Completed or Cancelled;
* stock is conserved: for every sku, what was on the shelf before, minus what completed
  orders bought, is on the shelf after;
* no order is charged twice, every completed order was paid and no cancelled one was
  (a payment refunded, as the order saga's compensation does, is not a payment kept).

Both ways of running the order saga (``SHOP_SAGA``: choreography, orchestration) are held
to the same checks.

The orders are read over the order service's HTTP API; the stock from inventory's state
and the payments from billing's topic, with the framework's read helpers
(:mod:`tidings.testing`), so the services need no endpoint for it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from shop import inventory
from shop.events import PaymentProcessed, PaymentRefunded
from tidings.testing import documents, envelopes

console = Console()


async def read_stock(store: str) -> dict[str, int]:
    """Units on the shelf per sku, in inventory's state in the store at URL ``store``."""
    stock = await documents(store, inventory.service, inventory.stock)
    return {sku: item.available for sku, item in stock.items()}


async def payments_in_log(broker: str, witness: str | None = None) -> dict[str, set[str]]:
    """The distinct payments kept (the ``payment_id`` of PaymentProcessed events, less
    those refunded) that billing's topic holds per order.

    Distinct payment ids, because the same payment may be announced twice (a relay that
    crashed after publishing publishes the same event again; billing answers a command
    sent twice with the same payment): that is one payment seen twice, not two payments.
    A payment is refunded by its ``payment_id`` (PaymentRefunded). On a broker without history, ``witness`` is the group
    that kept them (:func:`tidings.testing.topics.witness`)."""
    info = PaymentProcessed.message_info
    assert info.topic is not None and PaymentRefunded.message_info.topic == info.topic
    payments: dict[str, set[str]] = {}
    refunded: set[str] = set()
    for envelope in await envelopes(broker, info.topic, witness=witness):
        if envelope.type == info.type:
            payments.setdefault(str(envelope.data["order_id"]), set()).add(
                str(envelope.data["payment_id"])
            )
        elif envelope.type == PaymentRefunded.message_info.type:
            refunded.add(str(envelope.data["payment_id"]))
    kept = {order: found - refunded for order, found in payments.items()}
    return {order: found for order, found in kept.items() if found}


def _reason_kind(reason: str | None) -> str:
    reason = reason or "?"
    if reason.startswith("out of stock"):
        return "out of stock"
    return reason.split(" (")[0]


def report(
    final: dict[str, dict[str, Any]],
    before: dict[str, int],
    after: dict[str, int],
    payments: dict[str, set[str]],
    elapsed: float,
) -> bool:
    """Print what happened to the orders ``final`` (order id -> the order as
    ``GET /orders/{id}`` returns it), the stock and the payments; check the invariants
    and return whether they all hold."""
    statuses = Counter(o["status"] for o in final.values())
    completed = [o for o in final.values() if o["status"] == "COMPLETED"]
    sold: Counter[str] = Counter()
    for o in completed:
        for line in o["lines"]:
            sold[line["sku"]] += line["quantity"]

    outcome = Table("outcome", "orders", title=f"{len(final)} orders in {elapsed:.1f}s")
    outcome.add_row("completed", str(statuses["COMPLETED"]))
    for kind, count in sorted(
        Counter(
            _reason_kind(o.get("reason")) for o in final.values() if o["status"] == "CANCELLED"
        ).items()
    ):
        outcome.add_row(f"cancelled: {kind}", str(count))
    for status, count in statuses.items():
        if status not in ("COMPLETED", "CANCELLED"):
            outcome.add_row(f"[red]unsettled: {status}[/]", str(count))
    console.print(outcome)

    stock = Table("sku", "before", "sold", "after", title="stock")
    for sku in sorted(before):
        stock.add_row(sku, str(before[sku]), str(sold[sku]), str(after.get(sku, 0)))
    console.print(stock)
    ours = {k: v for k, v in payments.items() if k in final}
    taken = sum(o["amount_cents"] for o in completed)
    console.print(
        f"payments taken: {sum(len(v) for v in ours.values())} for {taken / 100:.2f} in total"
    )

    checks = {
        "every order ended Completed or Cancelled": all(
            o["status"] in ("COMPLETED", "CANCELLED") for o in final.values()
        ),
        "stock conserved (before - sold = after, for every sku)": all(
            before[s] - sold[s] == after.get(s, 0) for s in before
        )
        and set(sold) <= set(before),
        "no order charged twice": all(len(v) == 1 for v in ours.values()),
        "every completed order was paid, no cancelled one was": {o["order_id"] for o in completed}
        == set(ours),
    }
    for text, ok in checks.items():
        console.print(("[green]✓[/] " if ok else "[red]✗[/] ") + text)
    return all(checks.values())
