"""Group membership helpers the SQLite log and NATS share: member ids and the heartbeat.

**Member ids** name the host and process (for whoever reads the broker's tables or
buckets) and a random part (two members of one process never collide).

**The heartbeat** is a task per transport that calls ``beat()`` every ``interval``
seconds while ``alive()`` is true, so that a member keeps its partitions while a handler
awaits something slow between two fetches (an HTTP call, a retry's backoff); ``fetch``
beats as well, when it syncs. The rules:

* the transport starts it (:meth:`Heartbeat.start`) when a member joins; it stops by
  itself once ``alive()`` is false (the last member left), and :meth:`Heartbeat.stop`
  ends it at once (on close);
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
from collections.abc import Awaitable, Callable

__all__ = ["Heartbeat", "member_id"]


def member_id() -> str:
    """``<host>-<pid>-<random>``: unique, and says where the member runs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Calls ``beat`` every ``interval`` seconds while ``alive()``; see the module rules."""

    def __init__(
        self, interval: float, beat: Callable[[], Awaitable[None]], alive: Callable[[], bool]
    ) -> None:
        self.interval = interval
        self._beat = beat
        self._alive = alive
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the beats, unless they run already."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while self._alive():
            await asyncio.sleep(self.interval)
            await self._beat()
