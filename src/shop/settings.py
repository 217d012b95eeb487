"""Shop settings read from the environment, so the demo and tests can steer the services.

* ``SHOP_STOCK``: initial stock, ``sku=qty,sku=qty`` (default: :data:`catalog.INITIAL_STOCK`);
* ``SHOP_CREDIT_LIMITS``: per-customer spending limits in cents, ``customer=cents,...``
  (a customer not listed has ``SHOP_DEFAULT_CREDIT_CENTS``, default 10,000,000);
* ``SHOP_PAYMENT_FAILURE_RATE``: share of payments the simulator declines (default 0);
* ``SHOP_SEED``: seed of that simulator, so a run can be repeated exactly;
* ``SHOP_FRAUD_HOLD_FILE``: a file of customer ids (one a line, ``#`` comments) whose
  payments billing holds for manual fraud review; re-read on every payment, so the risk
  team clears a customer by editing it (see :mod:`shop.billing`);
* ``SHOP_SAGA``: how the order service's new orders are coordinated, ``choreography``
  (the default: each service reacts to the others' events) or ``orchestration``
  (``shop.orchestrator`` sends commands and awaits replies). Only the order service
  reads it, when it places an order: the mode travels on the order's events
  (``saga``), and every other service follows the order's mode, so processes started
  with different settings (or a switch with orders in flight) strand no order;
* ``SHOP_STEP_TIMEOUT``: seconds the orchestrator waits for a reply before it compensates
  (default 30).
"""

from __future__ import annotations

import os
from pathlib import Path

from shop.catalog import INITIAL_STOCK


def _pairs(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        if not name or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"expected name=number, got {item!r}")
        out[name.strip()] = int(value)
    return out


def initial_stock() -> dict[str, int]:
    text = os.environ.get("SHOP_STOCK")
    return _pairs(text) if text else dict(INITIAL_STOCK)


def credit_limits() -> dict[str, int]:
    return _pairs(os.environ.get("SHOP_CREDIT_LIMITS", ""))


def default_credit_cents() -> int:
    return int(os.environ.get("SHOP_DEFAULT_CREDIT_CENTS", "10000000"))


def payment_failure_rate() -> float:
    return float(os.environ.get("SHOP_PAYMENT_FAILURE_RATE", "0"))


def seed() -> str:
    return os.environ.get("SHOP_SEED", "tidings")


def fraud_hold_customers() -> frozenset[str]:
    path = os.environ.get("SHOP_FRAUD_HOLD_FILE")
    if not path:
        return frozenset()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return frozenset()
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


CHOREOGRAPHY, ORCHESTRATION = "choreography", "orchestration"
SAGA_MODES = (CHOREOGRAPHY, ORCHESTRATION)


def saga_mode() -> str:
    mode = os.environ.get("SHOP_SAGA", "choreography").strip().lower()
    if mode not in SAGA_MODES:
        raise ValueError(f"SHOP_SAGA={mode!r}: expected one of {', '.join(SAGA_MODES)}")
    return mode


def step_timeout() -> float:
    text = os.environ.get("SHOP_STEP_TIMEOUT", "30")
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"SHOP_STEP_TIMEOUT={text!r}: expected seconds, such as 30") from None
    if seconds <= 0:
        raise ValueError(f"SHOP_STEP_TIMEOUT={text!r}: must be positive")
    return seconds
