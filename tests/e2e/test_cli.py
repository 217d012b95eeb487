"""The `tidings` command line against a real SQLite log: topics, lag, dead letters, errors."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from shop import inventory
from shop.events import OrderLine, OrderPlaced
from tidings.runtime import Runtime
from tidings.store.sqlite import SQLiteStore
from tidings.testing.commands import tidings
from tidings.testing.harness import drain
from tidings.transport import make_transport
from tidings.transport.base import OutgoingRecord
from tidings.units import direct_record


@pytest.fixture
def broker(tmp_path: Path) -> str:
    """A log where inventory handled one good order and dead-lettered one poison record."""
    url = f"sqlite:///{tmp_path}/log.db"

    async def setup() -> None:
        transport = make_transport(url)
        await transport.connect()
        store = SQLiteStore(str(tmp_path / "inventory.db"))
        await store.connect()
        rt = Runtime(inventory.service, transport, store)
        await rt.start(background=False)
        placed = OrderPlaced(
            order_id="o-1",
            customer_id="c1",
            lines=[OrderLine(sku="widget", quantity=1)],
            amount_cents=1250,
        )
        _, record = direct_record(placed, transport, source="order")  # as the order service
        await transport.publish([record])
        await transport.publish([OutgoingRecord("shop.orders", b"\x00 not an event", "o-2")])
        await drain(rt)
        assert rt.stats.dead_lettered == 1
        await rt.stop()
        await store.close()
        await transport.close()

    asyncio.run(setup())
    return url


def test_topics_and_lag(broker: str) -> None:
    topics = tidings("topics", "--broker", broker)
    assert topics.returncode == 0, topics.stderr
    assert "shop.orders" in topics.stdout and "inventory.dlq" in topics.stdout
    lag = tidings("lag", "--broker", broker)
    assert lag.returncode == 0, lag.stderr
    rows = [
        line for line in lag.stdout.splitlines() if "inventory" in line and "shop.orders" in line
    ]
    assert rows, lag.stdout
    assert all(line.split("│")[-2].strip() == "0" for line in rows), lag.stdout  # all caught up


def test_dead_letters_list_show_replay(broker: str) -> None:
    listed = tidings("dlq", "list", "inventory", "--broker", broker)
    assert listed.returncode == 0, listed.stderr
    assert "undecodable" in listed.stdout and "1 dead letter(s)" in listed.stdout
    [letter_id] = re.findall(r"│ (\d+:\d+) ", listed.stdout)
    shown = tidings("dlq", "show", "inventory", letter_id, "--broker", broker)
    assert shown.returncode == 0, shown.stderr
    assert "not valid JSON" in shown.stdout
    assert "from shop.orders/" in shown.stdout
    replayed = tidings("dlq", "replay", "inventory", letter_id, "--broker", broker)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 dead letter(s) to inventory" in replayed.stdout
    topics = tidings("topics", "--broker", broker)
    replay_row = next(line for line in topics.stdout.splitlines() if "inventory.replay" in line)
    assert replay_row.split("│")[-2].strip() == "1"
    missing = tidings("dlq", "show", "inventory", "9:9", "--broker", broker)
    assert missing.returncode == 2 and "no dead letter '9:9'" in missing.stderr
    # The window (--since, a week by default): a letter stored before it is not read.
    time.sleep(1.1)
    recent = tidings("dlq", "list", "inventory", "--since", "1s", "--broker", broker)
    assert "0 dead letter(s) in inventory.dlq stored in the last 1s" in recent.stdout
    every = tidings("dlq", "list", "inventory", "--since", "all", "--broker", broker)
    assert "1 dead letter(s) in inventory.dlq\n" in every.stdout, every.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://127.0.0.1:1", "kafka://127.0.0.1:1"),
        ("nats://127.0.0.1:1", "nats://127.0.0.1:1"),
        ("rabbit://somewhere", "is not a broker URL"),
        ("sqlite:///", "a SQLite URL looks like sqlite:///./tidings.db"),
        ("sqlite:////proc/nope/log.db", "sqlite:////proc/nope/log.db"),
    ],
)
def test_a_bad_broker_url_gives_one_clear_line(url: str, expected: str) -> None:
    result = tidings("topics", "--broker", url)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and expected in lines[0]


def test_a_bad_dedupe_window_gives_one_clear_line(tmp_path: Path) -> None:
    result = tidings("run", "shop.billing:service", "--dedupe-window", "a week", cwd=tmp_path)
    assert result.returncode == 2
    assert "--dedupe-window 'a week': expected a duration such as 30s" in result.stderr
    assert "Traceback" not in result.stderr
