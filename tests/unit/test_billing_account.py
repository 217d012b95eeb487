"""Billing's account, an event-sourced ledger: its commands, invariants and replay."""

from __future__ import annotations

import pytest

from shop.billing import Account
from shop.events import AccountCharged, AccountRefunded, ChargeDeclined, CreditLimitSet


def an_account(limit: int = 5000) -> Account:
    account = Account(id="c1")
    account.set_limit(limit)
    return account


def test_charges_count_against_the_limit_and_refunds_give_it_back() -> None:
    account = an_account(3000)
    account.charge("o1", "p1", 1250)
    account.charge("o2", "p2", 1250)
    assert account.refusal("o3", 1250) == "credit limit of 3000 cents exceeded"
    assert account.refusal("o3", 500) is None
    account.refund("o1", "returned")
    assert account.spent_cents == 1250 and account.charges == {"o2": 1250}
    assert account.refusal("o3", 1250) is None
    assert [type(e) for e in account.pending_events()] == [
        CreditLimitSet,
        AccountCharged,
        AccountCharged,
        AccountRefunded,
    ]


def test_invariants_refuse_without_recording() -> None:
    account = an_account(3000)
    account.charge("o1", "p1", 1000)
    recorded = len(account.pending_events())
    with pytest.raises(ValueError, match="c1: order o1 was charged already"):
        account.charge("o1", "p1-again", 1000)
    with pytest.raises(ValueError, match="credit limit of 3000 cents exceeded"):
        account.charge("o2", "p2", 2001)
    with pytest.raises(ValueError, match="order o9 has no charge to refund"):
        account.refund("o9", "never charged")
    account.refund("o1", "returned")
    with pytest.raises(ValueError, match="order o1 has no charge to refund"):
        account.refund("o1", "twice")
    with pytest.raises(ValueError, match="order o1 was charged already"):
        account.charge("o1", "p1-after-refund", 10)
    with pytest.raises(ValueError, match="not negative"):
        account.set_limit(-1)
    assert len(account.pending_events()) == recorded + 1  # the one refund


def test_the_limit_is_recorded_only_when_it_changes_and_declines_keep_the_balance() -> None:
    account = an_account(3000)
    account.set_limit(3000)
    account.decline("o1", 9999, "credit limit of 3000 cents exceeded")
    account.set_limit(6000)
    assert [type(e) for e in account.pending_events()] == [
        CreditLimitSet,
        ChargeDeclined,
        CreditLimitSet,
    ]
    assert (account.limit_cents, account.spent_cents) == (6000, 0)


def test_a_new_account_may_charge_nothing() -> None:
    assert Account(id="c1").refusal("o1", 1) == "credit limit of 0 cents exceeded"
