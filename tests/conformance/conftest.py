"""Brokers for the transport conformance suite: add a backend with one line in BROKERS.

Each URL may use ``{tmp}`` (a fresh directory per test) and ``{uid}`` (a fresh suffix);
the suite itself uses fresh topic and group names, so a real broker can be shared.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tidings.testing.servers import require

BROKERS = [
    pytest.param("memory://conformance-{uid}", id="memory"),
    # Short sessions so that a SIGKILLed member's partitions move within about a second.
    pytest.param("sqlite:///{tmp}/log.db?session_timeout=1&heartbeat_interval=0.2", id="sqlite"),
    pytest.param("kafka://127.0.0.1:9092", id="kafka"),
    pytest.param("nats://127.0.0.1:4222", id="nats"),
    # A member looks at who consumes what twice a second: takeovers show sooner.
    pytest.param("amqp://guest:guest@127.0.0.1:5672/?sync_interval=0.5", id="rabbitmq"),
    # moto's emulator; a SIGKILLed member's messages come back after 3 s of invisibility.
    pytest.param("sqs+sns://127.0.0.1:4566?region=us-east-1&visibility_timeout=3", id="aws"),
    # A bus per test: moto matches each event against every rule of its bus, so one bus
    # shared by every run would slow PutEvents down as the runs add rules.
    pytest.param(
        "eventbridge://127.0.0.1:4566?region=us-east-1&visibility_timeout=3&bus=conformance-{uid}",
        id="eventbridge",
    ),
]

# The emulator takes any credentials, but the AWS SDK wants some from its chain.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture(params=BROKERS)
def transport_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    template: str = request.param
    require(template)
    return template.format(tmp=tmp_path, uid=uuid.uuid4().hex[:10])
