r"""Group membership helpers the SQLite log and NATS share: member ids and the heartbeat.

**Member ids** name the host and process (for whoever reads the broker's tables or
buckets) and a random part (two members of one process never collide).

**The heartbeat** keeps the members (subscriptions) of one transport, and a task that
calls ``beat(members)`` every ``interval`` seconds while there are any, so that a member keeps its partitions while a handler
awaits something slow between two fetches (an HTTP call, a retry's backoff); ``fetch``
beats as well, when it syncs. The rules:

* a member :meth:`~Heartbeat.join`\ s when it subscribed and :meth:`~Heartbeat.leave`\ s
  when it closes; the task starts with the first member, stops by itself after the
  last one left, and :meth:`~Heartbeat.stop` ends it at once (the transport's close);
* ``beat`` handles the broker's errors itself (it logs them): a beat that fails is
  followed by the next one, and a member whose beats fail for a whole session timeout
  loses its partitions, which is what a session timeout is for;
* it never reassigns partitions: assignment changes only inside ``fetch``.

When the process dies, or its event loop is blocked, the beats stop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Heartbeat", "member_id"]

M = TypeVar("M")


def member_id() -> str:
    """``<host>-<pid>-<random>``: unique, and says where the member runs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Heartbeat(Generic[M]):
    """The members of one transport and their beats; see the module rules."""

    def __init__(self, interval: float, beat: Callable[[Sequence[M]], Awaitable[None]]) -> None:
        self.interval = interval
        self.members: list[M] = []
        self._beat = beat
        self._task: asyncio.Task[None] | None = None

    def join(self, member: M) -> None:
        self.members.append(member)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    def leave(self, member: M) -> None:
        if member in self.members:
            self.members.remove(member)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while self.members:
            await asyncio.sleep(self.interval)
            await self._beat(list(self.members))
