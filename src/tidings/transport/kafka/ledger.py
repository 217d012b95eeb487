"""What a Kafka group member handed out and has not settled yet, per partition.

Kept apart from the consumer so that the rules are plain: a delivery can be settled only
while it is outstanding; an ack settles it and everything before it in its partition
(cumulative), a nack everything from it on (those come again). Attempts count how often
this member handed out an offset; only offsets handed out again are remembered.
Not thread-safe: :class:`~.subscription.KafkaSubscription` holds its lock.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from confluent_kafka import Message

from tidings.transport.contract import Delivery, Subscription
from tidings.transport.kafka.config import to_record

TP = tuple[str, int]


class DeliveryLedger:
    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription
        # Per partition: the outstanding deliveries by offset, and their offsets in order
        # (settling from either end is then O(1) per delivery).
        self._issued: dict[TP, dict[int, Delivery]] = {}
        self._order: dict[TP, collections.deque[int]] = {}
        self._delivered_to: dict[TP, int] = {}  # 1 + the highest offset handed out
        self._attempts: dict[TP, dict[int, int]] = {}

    def issue(self, messages: Iterable[Message], assigned: frozenset[TP]) -> list[Delivery]:
        """Deliveries for the messages of assigned partitions (the per-record hot path:
        a partition's state is looked up once per run of its messages)."""
        out: list[Delivery] = []
        append = out.append
        sub = self._subscription
        tp: TP | None = None
        issued: dict[int, Delivery] = {}
        order: collections.deque[int] = collections.deque()
        delivered_to = 0
        for message in messages:
            record = to_record(message)
            if tp is None or tp[1] != record.partition or tp[0] != record.topic:
                if tp is not None:
                    self._delivered_to[tp] = delivered_to
                tp = (record.topic, record.partition)
                if tp not in assigned:  # revoked after librdkafka handed it over
                    tp = None
                    continue
                if tp not in self._issued:
                    self._issued[tp], self._order[tp] = {}, collections.deque()
                issued, order = self._issued[tp], self._order[tp]
                delivered_to = self._delivered_to.get(tp, 0)
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
        if tp is not None:
            self._delivered_to[tp] = delivered_to
        return out

    def _outstanding(self, delivery: Delivery) -> TP | None:
        record = delivery.record
        tp = (record.topic, record.partition)
        issued = self._issued.get(tp)
        return tp if issued and issued.get(record.offset) is delivery else None

    def ack(self, delivery: Delivery) -> TP | None:
        """Settle ``delivery`` and all before it; its partition, or None if it was not
        outstanding (settled already, or a nack rewound past it: it comes again)."""
        tp = self._outstanding(delivery)
        if tp is None:
            return None
        offset = delivery.record.offset
        issued, order = self._issued[tp], self._order[tp]
        while order and order[0] <= offset:
            del issued[order.popleft()]
        attempts = self._attempts.get(tp)
        if attempts:
            for done in [o for o in attempts if o <= offset]:
                del attempts[done]
        return tp

    def nack(self, delivery: Delivery) -> TP | None:
        """Settle ``delivery`` and all after it (to be read again); as for :meth:`ack`."""
        tp = self._outstanding(delivery)
        if tp is None:
            return None
        offset = delivery.record.offset
        issued, order = self._issued[tp], self._order[tp]
        while order and order[-1] >= offset:
            del issued[order.pop()]
        return tp

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            for state in (self._issued, self._order, self._delivered_to, self._attempts):
                state.pop(tp, None)
