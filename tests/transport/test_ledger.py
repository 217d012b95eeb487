"""The rules of the shared delivery ledger (tidings.transport.ledger), broker by broker
the same: outstanding by identity, cumulative ack, nack from the record on, attempts."""

from __future__ import annotations

import time

import pytest

from tidings.records import Record
from tidings.transport.contract import Delivery, Subscription
from tidings.transport.errors import NotAssigned
from tidings.transport.ledger import DeliveryLedger, check_held


class _Member(Subscription):
    group, topics = "g", ("t",)

    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        return []

    async def ack(self, delivery: Delivery) -> None: ...

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None: ...

    def assignment(self) -> frozenset[tuple[str, int]]:
        return frozenset()

    async def close(self) -> None: ...


def records(partition: int, *offsets: int) -> list[Record]:
    return [Record("t", partition, o, None, b"", {}, 0.0) for o in offsets]


def test_ack_is_cumulative_and_settles_only_what_is_outstanding() -> None:
    ledger = DeliveryLedger(_Member())
    d0, d1, d2 = ledger.issue(records(0, 0, 1, 2))
    assert ledger.ack(d1) == 2  # d0 and d1
    assert ledger.ack(d0) == 0  # settled already
    assert ledger.ack(d2) == 1


def test_nack_settles_from_the_record_on_and_a_later_ack_commits_nothing() -> None:
    ledger = DeliveryLedger(_Member())
    _d0, d1, d2 = ledger.issue(records(0, 0, 1, 2))
    assert ledger.nack(d1) == [d1, d2]
    assert ledger.ack(d2) == 0  # rewound past: it comes again
    again = ledger.issue(records(0, 1, 2))
    assert [d.attempt for d in again] == [2, 2]
    assert ledger.ack(again[1]) == 3  # d0 and both again


def test_attempts_count_what_this_member_handed_out_again() -> None:
    ledger = DeliveryLedger(_Member())
    (first,) = ledger.issue(records(0, 5))
    assert first.attempt == 1
    assert ledger.attempts(("t", 0), 5) == 1
    (second,) = ledger.issue(records(0, 5))  # read again from 5: the first is dropped
    assert second.attempt == 2 and ledger.ack(first) == 0
    assert ledger.ack(second) == 1
    ledger.forget([("t", 0)])
    assert ledger.issue(records(0, 5))[0].attempt == 1


def test_issue_skips_partitions_not_held_and_partitions_are_apart() -> None:
    ledger = DeliveryLedger(_Member())
    out = ledger.issue(records(0, 0) + records(1, 0) + records(0, 1), held={("t", 0)})
    assert [(d.record.partition, d.record.offset) for d in out] == [(0, 0), (0, 1)]


def test_a_nack_with_a_delay_pauses_the_partition() -> None:
    ledger = DeliveryLedger(_Member())
    (d,) = ledger.issue(records(0, 0))
    ledger.nack(d, delay=60)
    now = time.monotonic()
    assert not ledger.ready(("t", 0), now)
    assert ledger.next_resume({("t", 0)}) == ledger.paused_until(("t", 0)) > now
    assert ledger.next_resume({("t", 1)}) is None
    assert ledger.ready(("t", 0), now + 61) and ledger.paused_until(("t", 0)) == 0.0


def test_check_held_names_the_partition() -> None:
    (d,) = DeliveryLedger(_Member()).issue(records(2, 0))
    assert check_held("memory://", "g", d, {("t", 2)}) == ("t", 2)
    with pytest.raises(NotAssigned, match=r"t\[2\] is not assigned .* group 'g'"):
        check_held("memory://", "g", d, set())
    with pytest.raises(NotAssigned):
        check_held("memory://", "g", d, {("t", 2)}, closed=True)
