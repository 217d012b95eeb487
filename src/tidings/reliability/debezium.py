"""The Debezium relay: where a runtime's polling outbox relay stands with ``--relay debezium``.

It publishes nothing itself. At start (:meth:`DebeziumRelay.prepare`, before the service
handles or serves anything) it makes the store write the service's outbox for Debezium,
makes sure the connector for that table runs with its replication slot, and lets the
polling relay publish once what it had left in the polled outbox. The rules, and what
happens on a crash, are in :mod:`tidings.cdc.outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from tidings.cdc import connect
from tidings.cdc import outbox as captured
from tidings.reliability.outbox import OutboxRelay
from tidings.store.base import Store
from tidings.transport.base import Transport

log = logging.getLogger("tidings.outbox")

RELAYS = ("polling", "debezium")


def check_relay(relay: str) -> str:
    """``relay`` if it names one (:data:`RELAYS`), else ValueError saying which do."""
    if relay not in RELAYS:
        raise ValueError(f"--relay {relay!r}: expected {' or '.join(RELAYS)}")
    return relay


class DebeziumRelay:
    """Stands for :class:`~tidings.reliability.outbox.OutboxRelay` in a runtime whose
    outbox Debezium publishes; only :meth:`prepare` has work to do."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        service: str,
        *,
        connect_url: str | None = None,
        start_timeout: float = 300.0,
        watch_interval: float = 15.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.service = service
        self.connect_url = connect_url or connect.DEFAULT_URL
        self.start_timeout = start_timeout  # registering waits for open transactions
        self.connector: str | None = None
        self.watch_interval = watch_interval
        # Debezium publishes: nothing is counted here, nor in the service's published metric.
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        """Check the broker, switch the store, register the connector if Connect lacks it
        (or has another config), wait until it runs with its slot, then publish what the
        polling relay left; ValueError or ConnectError saying what is wrong."""
        if not self.transport.url.startswith("kafka"):
            raise ValueError(
                "--relay debezium publishes through Kafka Connect to Kafka; "
                f"{self.transport.url.split('://')[0]}:// is not Kafka: use --relay polling"
            )
        table = await self.store.capture_outbox(self.service)
        database_url = captured.plain_url(self.store.url)
        database = urlsplit(database_url).path.lstrip("/") or "postgres"
        name = captured.connector_name(database, table.split(".")[0])
        self.connector = name
        registered = await asyncio.to_thread(
            captured.ensure, self.connect_url, name, database_url, table
        )
        await asyncio.to_thread(connect.wait_running, self.connect_url, name, self.start_timeout)
        await asyncio.to_thread(captured.wait_slot, database_url, name, self.start_timeout)
        log.info(
            "outbox of %s: published by Debezium, connector %s (%s) reading %s",
            self.service,
            name,
            "registered now" if registered else "already registered",
            table,
        )
        left = OutboxRelay(self.store, self.transport, self.service)
        while await left.relay_once():
            pass
        if left.published:
            log.info(
                "outbox of %s: published %d row(s) the polling relay had left",
                self.service,
                left.published,
            )

    def wake(self) -> None:
        """Nothing to wake: Debezium reads the log as it is written."""

    async def relay_once(self) -> int:
        """Nothing to relay here (tests drive a polling relay with this)."""
        return 0

    def start(self) -> asyncio.Task[None]:
        """Watch the connector until :meth:`stop`: a failed or missing one is logged (a
        warning every ``watch_interval`` seconds), since nothing is published meanwhile."""
        self._task = asyncio.create_task(self._watch(), name=f"relay {self.service}")
        return self._task

    async def _watch(self) -> None:
        assert self.connector is not None, "prepare() first"
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                state = await asyncio.to_thread(connect.states, self.connect_url, self.connector)
            except connect.ConnectError as exc:
                log.warning("outbox of %s: %s", self.service, exc)
                continue
            if state is None or state["connector"] != "RUNNING" or state["tasks"] != ["RUNNING"]:
                log.warning(
                    "outbox of %s: connector %s is %s: nothing is published until it runs "
                    "again (the slot keeps the log); see `tidings cdc status`",
                    self.service,
                    self.connector,
                    "gone" if state is None else state["trace"] or state,
                )

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop watching. Nothing to drain: what was committed is in the log, for the
        connector."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
