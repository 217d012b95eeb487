"""Prices of what the shop sells, and the stock a fresh inventory starts with."""

from __future__ import annotations

PRICES_CENTS: dict[str, int] = {
    "widget": 1_250,
    "gadget": 4_999,
    "gizmo": 799,
    "doohickey": 15_000,
}

INITIAL_STOCK: dict[str, int] = {
    "widget": 60,
    "gadget": 20,
    "gizmo": 100,
    "doohickey": 5,
}
