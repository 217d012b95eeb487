"""What a group member handed out and has not settled yet, per partition.

Every broker's subscription keeps one :class:`DeliveryLedger`; it knows no broker. It
takes records and gives :class:`Delivery` objects, and says what an ack or a nack
settled; what that means on the wire (a commit, an ack subject, a seek) is the
subscription's business. The rules:

* A delivery is **outstanding** from :meth:`~DeliveryLedger.issue` until it is settled,
  and only an outstanding delivery can be settled, by identity: settling one that is not
  (settled already, or a nack rewound past it, so it comes again) settles nothing.
* An **ack** settles the delivery and every one before it in its partition (cumulative),
  a **nack** the delivery and every one after it (they come again, in order). A nack with
  a delay pauses the partition until then; :meth:`~DeliveryLedger.ready` says when it
  may be read again.
* Issuing an offset at or below an outstanding one of its partition (the partition is
  read again from there) drops those from outstanding.
* ``attempt`` counts how often this member handed out an offset: 1 the first time. Only
  offsets handed out again are remembered, until acked, so the first delivery of a
  record costs no bookkeeping beyond the outstanding entry.
* :meth:`~DeliveryLedger.forget` drops every trace of partitions the member gave up.

Times are ``time.monotonic()``. Not thread-safe: a subscription that settles from
another thread holds its own lock around every call (Kafka's does).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Container, Iterable

from tidings.records import Record
from tidings.transport.contract import Delivery, Subscription
from tidings.transport.errors import NotAssigned

__all__ = ["TP", "DeliveryLedger", "check_held"]

TP = tuple[str, int]


def check_held(
    url: str, group: str, delivery: Delivery, held: Container[TP], closed: bool = False
) -> TP:
    """The delivery's partition, if this (open) member still holds it; else NotAssigned."""
    record = delivery.record
    tp = (record.topic, record.partition)
    if closed or tp not in held:
        raise NotAssigned(
            f"{url}: {record.topic}[{record.partition}] is not assigned to this member of"
            f" group {group!r} (any more)"
        )
    return tp


class DeliveryLedger:
    """Outstanding deliveries, attempts and nack pauses of one member; see the module."""

    __slots__ = ("_attempts", "_delivered_to", "_issued", "_order", "_paused", "_subscription")

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription
        # Per partition: the outstanding deliveries by offset, and their offsets in order
        # (settling from either end is then O(1) per delivery).
        self._issued: dict[TP, dict[int, Delivery]] = {}
        self._order: dict[TP, collections.deque[int]] = {}
        self._delivered_to: dict[TP, int] = {}  # 1 + the highest offset handed out
        self._attempts: dict[TP, dict[int, int]] = {}  # of offsets handed out again
        self._paused: dict[TP, float] = {}  # nacked with a delay: readable again then

    def issue(self, records: Iterable[Record], held: Container[TP] | None = None) -> list[Delivery]:
        """Deliveries for the records (of ``held`` partitions only, if given), in order;
        the records may come from several partitions (a Kafka consume batch)."""
        out: list[Delivery] = []
        tp: TP = ("", -1)  # no partition yet
        run: list[Record] = []
        skip = False
        for record in records:
            if tp[1] != record.partition or tp[0] != record.topic:
                if run:
                    out += self.issue_partition(tp, run)
                tp, run = (record.topic, record.partition), []
                skip = held is not None and tp not in held  # given up meanwhile
            if not skip:
                run.append(record)
        if run:
            out += self.issue_partition(tp, run)
        return out

    def issue_partition(self, tp: TP, records: Iterable[Record]) -> list[Delivery]:
        """Deliveries for records of partition ``tp``, in order: the per-record hot path,
        so the partition's state is looked up once per call."""
        issued = self._issued.get(tp)
        if issued is None:
            issued = self._issued[tp] = {}
            self._order[tp] = collections.deque()
        order = self._order[tp]
        delivered_to = self._delivered_to.get(tp, 0)
        sub = self._subscription
        out: list[Delivery] = []
        append = out.append
        for record in records:
            offset = record.offset
            while order and order[-1] >= offset:  # the partition is read again from here
                del issued[order.pop()]
            if offset >= delivered_to:
                attempt = 1
                delivered_to = offset + 1
            else:
                attempts = self._attempts.setdefault(tp, {})
                attempt = attempts[offset] = attempts.get(offset, 1) + 1
            delivery = issued[offset] = Delivery(sub, record, attempt)
            order.append(offset)
            append(delivery)
        self._delivered_to[tp] = delivered_to
        return out

    def _outstanding(self, delivery: Delivery) -> TP | None:
        record = delivery.record
        tp = (record.topic, record.partition)
        issued = self._issued.get(tp)
        return tp if issued and issued.get(record.offset) is delivery else None

    def ack(self, delivery: Delivery) -> int:
        """Settle ``delivery`` and all before it; how many that settled (0: it was not
        outstanding, and the ack must commit nothing)."""
        record = delivery.record  # the per-record hot path: _outstanding inlined
        tp = (record.topic, record.partition)
        offset = record.offset
        issued = self._issued.get(tp)
        if not issued or issued.get(offset) is not delivery:
            return 0
        order = self._order[tp]
        settled = 1
        while order[0] < offset:  # delivery is in order: the loop stops there
            del issued[order.popleft()]
            settled += 1
        del issued[order.popleft()]
        attempts = self._attempts.get(tp)
        if attempts:
            for done in [o for o in attempts if o <= offset]:
                del attempts[done]
        return settled

    def nack(self, delivery: Delivery, delay: float = 0.0) -> list[Delivery]:
        """Settle ``delivery`` and all after it, to be handed out again after ``delay``
        seconds; the settled deliveries in offset order (none: it was not outstanding)."""
        tp = self._outstanding(delivery)
        if tp is None:
            return []
        offset = delivery.record.offset
        issued, order = self._issued[tp], self._order[tp]
        settled: list[Delivery] = []
        while order and order[-1] >= offset:
            settled.append(issued.pop(order.pop()))
        settled.reverse()
        if delay > 0:
            self._paused[tp] = time.monotonic() + delay
        else:
            self._paused.pop(tp, None)
        return settled

    def attempts(self, tp: TP, offset: int) -> int:
        """How often this member handed out ``offset`` (0 if never, as far as it knows)."""
        if offset >= self._delivered_to.get(tp, 0):
            return 0
        return self._attempts.get(tp, {}).get(offset, 1)

    def ready(self, tp: TP, now: float) -> bool:
        """Whether ``tp`` may be read at ``now``: not paused by a nack, or no longer."""
        until = self._paused.get(tp)
        if until is None:
            return True
        if until > now:
            return False
        del self._paused[tp]
        return True

    def paused_until(self, tp: TP) -> float:
        """When a nack's pause of ``tp`` ends (0.0: not paused)."""
        return self._paused.get(tp, 0.0)

    def next_resume(self, among: Container[TP]) -> float | None:
        """When the first pause of these partitions ends (None: none is paused)."""
        ends = [until for tp, until in self._paused.items() if tp in among]
        return min(ends) if ends else None

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop everything about these partitions (given up, or read again from scratch)."""
        for tp in tps:
            for state in (self._issued, self._order, self._delivered_to, self._attempts):
                state.pop(tp, None)
            self._paused.pop(tp, None)
