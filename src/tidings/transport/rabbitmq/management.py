"""What only RabbitMQ's management API (HTTP, the ``rabbitmq_management`` plugin) tells:
a topic's partition count, which consumer is active on a queue, queue depths.

AMQP 0-9-1 reads none of these back: an exchange's arguments, the single active
consumer of a queue (RabbitMQ 3.10 sends no notice when a waiting consumer becomes
active) and a queue's depth while others consume it. The API's numbers come from
statistics the node emits every ``collect_statistics_interval`` (1 s as
``scripts/services`` configures it), so they may be that old; the rules that use them
(assignment, rebalancing, lag) allow for it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any
from urllib.parse import quote

import httpx

from tidings.transport.errors import BrokerUnavailable
from tidings.transport.rabbitmq.wire import HOW_TO_START, PARTITIONS_ARG, parse_queue

__all__ = ["Consumers", "Management"]


@dataclasses.dataclass(slots=True)
class Consumers:
    """Per queue: the consumer tags registered on it, and the active one (if known)."""

    tags: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    active: dict[str, str] = dataclasses.field(default_factory=dict)


class Management:
    """A client of the management API of one vhost."""

    def __init__(self, base: str, vhost: str, auth: tuple[str, str], timeout: float) -> None:
        self.base = base.rstrip("/")
        self.vhost = quote(vhost, safe="")
        self._client = httpx.AsyncClient(auth=auth, timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/{path}"
        try:
            response = await self._client.get(url, params=params or None)
        except httpx.HTTPError as exc:
            raise BrokerUnavailable(
                f"{url}: the RabbitMQ management API does not answer ({exc!r}); {HOW_TO_START}"
            ) from None
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise BrokerUnavailable(f"{url}: the management API answered {response.status_code}")
        return response.json()

    async def partitions(self, exchange: str) -> int | None:
        """The partition count of a topic's exchange (None: no such exchange)."""
        info = await self._get(f"exchanges/{self.vhost}/{quote(exchange, safe='')}")
        if info is None:
            return None
        count = (info.get("arguments") or {}).get(PARTITIONS_ARG)
        return int(count) if count is not None else None

    async def topics(self) -> dict[str, int]:
        """Every topic (an exchange with a partition count) and its partition count."""
        out = {}
        for info in await self._get(f"exchanges/{self.vhost}") or []:
            count = (info.get("arguments") or {}).get(PARTITIONS_ARG)
            if count is not None:
                out[info["name"]] = int(count)
        return out

    async def queues(self) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> messages in the queue (ready and unacked)."""
        out = {}
        for info in await self._get(f"queues/{self.vhost}", columns="name,messages") or []:
            parsed = parse_queue(info["name"])
            if parsed is not None:
                out[parsed] = int(info.get("messages") or 0)
        return out

    async def consumers(self) -> Consumers:
        """Who consumes which queue, and which consumer is the active one."""
        found = Consumers()
        for info in await self._get(f"consumers/{self.vhost}") or []:
            if not info.get("channel_details"):  # a consumer whose channel is gone
                continue
            queue, tag = info["queue"]["name"], info["consumer_tag"]
            found.tags[queue].add(tag)
            if info.get("activity_status") == "single_active":
                found.active[queue] = tag
        return found
