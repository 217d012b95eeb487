"""The runtime's error policy: each failure gets one action, decided from its type alone."""

from __future__ import annotations

import random

import pytest

from tidings import NonRecoverable, RetryPolicy
from tidings.reliability import policy
from tidings.reliability.deadletter import DeadLetterKind
from tidings.reliability.policy import Action
from tidings.store.base import ConcurrencyConflict, StoreUnavailable
from tidings.transport.base import BrokerUnavailable, RecordTooLarge

RETRY = RetryPolicy(max_attempts=3, jitter=0.0)


def decide(error: Exception, attempt: int = 1, conflicts: int = 0) -> policy.Decision:
    return policy.after_failure(
        error,
        handler="invalidate_cache",
        retry=RETRY,
        attempt=attempt,
        conflicts=conflicts,
        rng=random.Random(3),
    )


def test_a_handler_error_is_retried_by_its_policy_then_dead_lettered() -> None:
    assert decide(RuntimeError("x"), attempt=1) == policy.Decision(Action.RETRY, 0.05)
    assert decide(RuntimeError("x"), attempt=2) == policy.Decision(Action.RETRY, 0.1)
    last = decide(RuntimeError("x"), attempt=3)
    assert last.action is Action.DEAD_LETTER and last.reason is not None
    assert last.reason.kind is DeadLetterKind.RETRIES_EXHAUSTED
    assert last.reason.detail == "invalidate_cache failed after 3 attempt(s)"


@pytest.mark.parametrize("attempt", [1, 3])
def test_a_non_recoverable_error_is_dead_lettered_as_such_at_any_attempt(attempt: int) -> None:
    decision = decide(NonRecoverable("no"), attempt=attempt)
    assert decision.action is Action.DEAD_LETTER and decision.reason is not None
    assert decision.reason.kind is DeadLetterKind.NON_RECOVERABLE


def test_a_record_too_large_is_dead_lettered_although_it_is_a_transport_error() -> None:
    decision = decide(RecordTooLarge("2 MiB; this transport accepts at most 1048576 bytes"))
    assert decision.action is Action.DEAD_LETTER and decision.reason is not None
    assert decision.reason.kind is DeadLetterKind.TOO_LARGE


@pytest.mark.parametrize(
    "error", [BrokerUnavailable("kafka://b: down"), StoreUnavailable("sqlite:///x: locked")]
)
def test_an_outage_is_waited_out_even_on_the_last_attempt(error: Exception) -> None:
    assert decide(error, attempt=3) == policy.Decision(Action.WAIT_OUT)


def test_conflicts_back_off_longer_each_time_never_dead_letter_and_are_capped() -> None:
    ceilings = []
    for conflicts in range(0, 500):
        decision = decide(ConcurrencyConflict("totals/a"), attempt=3, conflicts=conflicts)
        assert decision.action is Action.BACK_OFF
        ceiling = min(1.0, 0.002 * 2**conflicts)
        assert ceiling / 2 <= decision.delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings[0] == 0.002 and ceilings[-1] == 1.0


def test_a_storm_is_logged_at_its_start_and_now_and_then_after() -> None:
    assert [n for n in range(1, 1001) if policy.is_storm(n)] == [10, *range(100, 1001, 100)]


def test_outage_waits_grow_and_are_capped() -> None:
    rng = random.Random(5)
    for outages in range(1, 100):
        ceiling = min(5.0, 0.1 * 2 ** (outages - 1))
        assert ceiling / 2 <= policy.outage_delay(outages, rng) <= ceiling
