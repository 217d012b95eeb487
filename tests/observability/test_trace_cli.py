"""``tidings trace`` on orders of a real ``tidings demo`` run: the causal chains, as text and JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TIME = r"\d\d:\d\d:\d\d\.\d{3}"


def tidings(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, str]]]:
    """A demo run's directory and, for a completed and a cancelled order, (id, broker)."""
    cwd = tmp_path_factory.mktemp("demo")
    result = tidings("demo", "--orders", "20", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    hints = dict(
        re.findall(r"trace a (completed|cancelled) order: (tidings trace .+)", result.stdout)
    )
    assert set(hints) == {"completed", "cancelled"}, result.stdout
    orders = {}
    for status, command in hints.items():
        _, _, order_id, _, broker = command.split()
        orders[status] = (order_id, broker)
    return cwd, orders


# Billing's ledger: events on the customer's account (event sourcing), recorded by the
# handler that charges or declines, so siblings of the payment's outcome in the tree.
LEDGER = {"CreditLimitSet", "AccountCharged", "ChargeDeclined", "AccountRefunded"}


def without_ledger(nodes: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The order's own chain; the ledger's events must sit beside the payment (depth 2)."""
    ledger = [n for n in nodes if n[1] in LEDGER]
    assert ledger and all(depth == 2 and service == "billing" for depth, _, service in ledger)
    return [n for n in nodes if n[1] not in LEDGER]


def chain(lines: list[str]) -> list[tuple[int, str, str]]:
    """(depth, event type, service) of each event line of a rendered tree."""
    out = []
    for line in lines[1:]:
        match = re.match(r"^([│├└─ ]*)(\w+)  by (\w+)  at " + TIME, line)
        if match:  # each level of the tree indents by three characters
            out.append((len(match.group(1)) // 3, match.group(2), match.group(3)))
    return out


def test_trace_prints_the_chain_of_a_completed_order(demo_run: Any) -> None:
    cwd, orders = demo_run
    order_id, broker = orders["completed"]
    result = tidings("trace", order_id, "--broker", broker, cwd=cwd)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    nodes = chain(lines)
    assert lines[0].startswith("correlation ") and f"{len(nodes)} events" in lines[0]
    assert ("AccountCharged" in {t for _, t, _ in nodes}), result.stdout
    assert without_ledger(nodes) == [
        (0, "OrderPlaced", "order"),
        (1, "InventoryReserved", "inventory"),
        (2, "PaymentProcessed", "billing"),
        (3, "OrderCompleted", "order"),
    ], result.stdout
    # Every effect shows the time from its cause.
    assert all(re.search(r"  \+\d+\.\d ms  ", line) for line in lines[2:]), result.stdout
    assert re.search(r"shop\.orders/\d@\d+", lines[1])


def test_trace_prints_the_compensation_of_a_cancelled_order(demo_run: Any) -> None:
    cwd, orders = demo_run
    order_id, broker = orders["cancelled"]
    result = tidings("trace", order_id, "--broker", broker, cwd=cwd)
    assert result.returncode == 0, result.stderr
    nodes = chain(result.stdout.splitlines())
    assert "ChargeDeclined" in {t for _, t, _ in nodes}, result.stdout
    assert without_ledger(nodes) == [
        (0, "OrderPlaced", "order"),
        (1, "InventoryReserved", "inventory"),
        (2, "PaymentFailed", "billing"),
        (3, "InventoryReleased", "inventory"),
        (4, "OrderCancelled", "order"),
    ], result.stdout


def test_trace_json_is_the_same_tree_by_correlation_id(demo_run: Any) -> None:
    cwd, orders = demo_run
    order_id, broker = orders["completed"]
    by_order = json.loads(tidings("trace", order_id, "--broker", broker, "--json", cwd=cwd).stdout)
    correlation = by_order["correlation_ids"][0]
    by_correlation = json.loads(
        tidings("trace", correlation, "--broker", broker, "--json", cwd=cwd).stdout
    )
    assert by_correlation["tree"] == by_order["tree"]
    node, path = by_order["tree"][0], []
    while True:
        path.append((node["type"], node["source"]))
        assert node["correlation_id"] == correlation
        if len(path) > 1:
            assert node["since_cause_ms"] >= 0
        if not node["children"]:
            break
        (child,) = [c for c in node["children"] if c["type"] not in LEDGER]
        assert child["causation_id"] == node["id"]
        node = child
    assert path == [
        ("OrderPlaced", "order"),
        ("InventoryReserved", "inventory"),
        ("PaymentProcessed", "billing"),
        ("OrderCompleted", "order"),
    ]
    assert by_order["tree"][0]["data"]["order_id"] == order_id
    assert by_order["services"] == ["billing", "inventory", "order"]


def test_trace_of_an_unknown_id_fails_with_one_line(demo_run: Any) -> None:
    cwd, orders = demo_run
    result = tidings("trace", "no-such-order", "--broker", orders["completed"][1], cwd=cwd)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())  # rich wraps it to the terminal's width
    assert "no event stored in the last 1d" in message and "no-such-order" in message
    assert "--since all reads every record kept" in message
