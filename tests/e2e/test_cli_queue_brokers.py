"""The `tidings` tools on the brokers of queues (RabbitMQ, SNS+SQS, EventBridge), as real
processes: `topics` and `lag` show what a queue can show (no end offsets; the messages
waiting per queue), and `dlq`, `trace` and `tail`, which read the log by offset, say in
one line that the platform cannot do it, naming it, instead of failing halfway."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tidings.testing import free_port
from tidings.testing.commands import tidings
from tidings.testing.processes import start_dashboard, stop_process
from tidings.testing.servers import require
from tidings.transport import open_transport
from tidings.transport.base import OutgoingRecord

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
BROKERS = [
    pytest.param("amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ", id="rabbitmq"),
    pytest.param("sqs+sns://127.0.0.1:4566?region=us-east-1", "AWS SNS+SQS", id="aws"),
    pytest.param(
        "eventbridge://127.0.0.1:4566?region=us-east-1", "AWS EventBridge", id="eventbridge"
    ),
]


async def _two_waiting(broker: str, topic: str, group: str) -> None:
    """A group with a queue of ``topic`` holding two records nobody consumed."""
    transport = await open_transport(broker)
    try:
        await transport.create_topic(topic, 1)
        await (await transport.subscribe(group, [topic])).close()
        await transport.publish(
            [OutgoingRecord(topic, b"a", "k"), OutgoingRecord(topic, b"b", "k")]
        )
    finally:
        await transport.close()


@pytest.mark.parametrize(("broker", "platform"), BROKERS)
def test_topics_and_lag_show_queues_and_the_log_readers_say_not_supported(
    broker: str, platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(broker)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    topic, group = f"cli-{uuid.uuid4().hex[:8]}", f"clig{uuid.uuid4().hex[:8]}"
    asyncio.run(_two_waiting(broker, topic, group))

    topics = tidings("topics", "--broker", broker, env=AWS_ENV, timeout=120)
    assert topics.returncode == 0, topics.stderr
    assert topic in topics.stdout
    assert f"end offsets are not supported on {platform}" in topics.stdout

    lag = tidings("lag", "--broker", broker, "--group", group, env=AWS_ENV, timeout=120)
    assert lag.returncode == 0, lag.stderr
    row = next(line.replace("│", " ").split() for line in lag.stdout.splitlines() if topic in line)
    assert row[0] == group and row[2] == "0", lag.stdout
    if not broker.startswith("amqp"):  # RabbitMQ's management API counts every 5 s
        assert row[3] == "2", lag.stdout
    assert f"lag on {platform}: messages waiting in each queue" in lag.stdout

    for command in (["dlq", "list", group], ["trace", "o-1"], ["tail", topic]):
        result = tidings(*command, "--broker", broker, env=AWS_ENV)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"tidings {command[0]} is not supported on {platform}" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_dashboard_shows_queues_and_no_urls_password(tmp_path) -> None:
    broker = "amqp://guest:guest@127.0.0.1:5672/"  # RabbitMQ's URLs carry their password
    require(broker, "postgresql://postgres@127.0.0.1:5432/tidings")
    topic, group = f"dash-{uuid.uuid4().hex[:8]}", f"dashg{uuid.uuid4().hex[:8]}"
    asyncio.run(_two_waiting(broker, topic, group))  # a group: no committed offsets here
    port = free_port()
    dashboard = start_dashboard(tmp_path, broker, port)
    try:
        overview = httpx.get(f"http://127.0.0.1:{port}/api/overview", timeout=30).json()
    finally:
        stop_process(dashboard)
    rows = [g for g in overview["groups"] if g["group"] == group]
    assert [(r["topic"], r["committed"], r["end"]) for r in rows] == [(topic, None, None)]
    started = (tmp_path / "dashboard.log").read_text()
    assert "amqp://guest:***@127.0.0.1:5672/" in started and "guest:guest" not in started
    store = "postgresql://postgres:pg-s3cret@127.0.0.1:5432/tidings"  # trust: any password
    shown = tidings("saga", "show", "no-such-order", "--store", store)
    assert "no instance 'no-such-order'" in shown.stderr, shown.stderr
    assert "pg-s3cret" not in shown.stdout + shown.stderr
