"""What a broker of queues answers for the calls of a log.

RabbitMQ's quorum queues and SQS keep no offsets (``Capabilities.offsets`` is False): a
delivered and acked message is gone, so there is nothing to read back by position, no
committed offset to show and nowhere to seek. :class:`WithoutOffsets` gives such a
transport those calls, each raising :class:`Unsupported` naming the platform and what was
asked, so a tool says so in one line. Put it before :class:`Transport` in the bases.
"""

from __future__ import annotations

from tidings.records import Record
from tidings.transport.errors import Unsupported


class WithoutOffsets:
    url: str
    platform: str

    def _unsupported(self, what: str) -> Unsupported:
        return Unsupported(
            f"{self.url}: {what} is not supported on {self.platform} (queues keep no"
            " offsets; see Capabilities.offsets)"
        )

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        raise self._unsupported("committed offsets")

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        raise self._unsupported("reading a partition by offset")

    async def seek(self, group: str, topic: str, partition: int, offset: int) -> None:
        raise self._unsupported("seeking a group")
