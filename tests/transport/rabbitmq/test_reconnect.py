"""The RabbitMQ transport survives a restart of RabbitMQ: publishing during the outage
raises BrokerUnavailable at once (the outbox retries), and once the node is back the
robust connection consumes again, every record comes (the unacked ones again) and new
ones are published and consumed.

The node restarted is a private one this module starts under a temporary directory
(its own node name, ports and data, Debian's ``rabbitmq-server`` as
``scripts/services.d/rabbitmq.sh`` runs it), never the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidings.testing.servers import skip_or_fail
from tidings.testing.transport import consume
from tidings.transport import open_transport
from tidings.transport.base import BrokerUnavailable, NotAssigned, OutgoingRecord

RMQ_BIN = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateNode:
    """A RabbitMQ node of this test's own: start, stop (SIGTERM to its process group,
    which this class made) and start again on the same data."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.amqp, self.management, self.dist = _free_port(), _free_port(), _free_port()
        (home / "mnesia").mkdir(parents=True)
        (home / "log").mkdir()
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management}\n"
            "log.file.level = warning\n"
        )
        (home / "enabled_plugins").write_text("[rabbitmq_management].")
        (home / "advanced.config").write_text("[].")
        (home / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(home), "RABBITMQ_NODENAME": f"reconnect{uuid.uuid4().hex[:6]}@localhost",
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"), "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_DIST_PORT": str(self.dist), "ERL_EPMD_ADDRESS": "127.0.0.1",
        }  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.url = (
            f"amqp://guest:guest@127.0.0.1:{self.amqp}/?sync_interval=0.5"
            f"&management=http://127.0.0.1:{self.management}&publish_timeout=10"
        )

    def start(self, within: float = 120.0) -> None:
        log = open(self.home / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(RMQ_BIN)], env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"rabbitmq-server exited; see {self.home}/server.log")
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{self.management}/api/overview",
                    auth=("guest", "guest"), timeout=2,
                )  # fmt: skip
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the private node did not start within {within} s")

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the group this class started
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[PrivateNode]:
    if not RMQ_BIN.exists():
        skip_or_fail(f"{RMQ_BIN} is missing: `scripts/services up rabbitmq` installs it")
    private = PrivateNode(tmp_path / "rabbitmq")
    private.start()
    try:
        yield private
    finally:
        private.stop()


async def test_the_transport_survives_a_restart_of_rabbitmq(node: PrivateNode) -> None:
    transport = await open_transport(node.url)
    topic, group = f"restart-{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}"
    try:
        await transport.create_topic(topic, 2)
        sub = await transport.subscribe(group, [topic])
        before = [OutgoingRecord(topic, f"a{i}".encode(), f"k{i % 4}") for i in range(20)]
        await transport.publish(before)
        first = await consume(sub, 10, within=20, max_records=10)  # acked
        held = await sub.fetch(max_records=100, timeout=2.0)  # handed out, not acked
        assert len(first) == 10 and held

        await asyncio.to_thread(node.stop)
        with pytest.raises(BrokerUnavailable):
            await transport.publish([OutgoingRecord(topic, b"lost", "k0")])
        await asyncio.to_thread(node.start)

        after = [OutgoingRecord(topic, f"b{i}".encode(), f"k{i % 4}") for i in range(20)]
        deadline = time.monotonic() + 60
        while True:  # as the outbox does: publish again until RabbitMQ is back
            try:
                await transport.publish(after)
                break
            except BrokerUnavailable:
                assert time.monotonic() < deadline, "not published within 60 s of the restart"
                await asyncio.sleep(0.5)
        # Held when the connection went: void. Its ack raises NotAssigned (the queue is
        # not this member's yet) or commits nothing, so the record comes again.
        with contextlib.suppress(NotAssigned):
            await held[-1].ack()
        rest = await consume(sub, 30, within=60)
        seen = {d.record.value for d in first + rest}
        assert seen == {r.value for r in before + after}, sorted(seen)
        assert {d.record.value for d in held} <= {d.record.value for d in rest}
        await sub.close()
    finally:
        await transport.close()
