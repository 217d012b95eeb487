"""Where things go: a key to its partition, partitions to the members of a group.

Both are pure functions of their arguments, computed alike in every process, so that
members agree without talking to each other:

* :func:`partition_for` is the SQLite log's and the NATS transport's partitioner
  (Kafka keeps librdkafka's murmur2, Java's, so keys land where Java clients put them);
* :func:`assign` is the assignment every member of a SQLite or NATS group computes alone,
  and the in-memory broker's.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence

__all__ = ["assign", "partition_for"]


def assign(
    members: Sequence[tuple[str, Collection[str]]], partitions: Mapping[str, int]
) -> dict[str, set[tuple[str, int]]]:
    """Each (topic, partition), in sorted order, to the least loaded member subscribed to
    its topic, ties to the smallest member id: round robin when every member reads the
    same topics, and still balanced when they do not (where plain round robin is not)."""
    result: dict[str, set[tuple[str, int]]] = {member: set() for member, _ in members}
    ordered = sorted(members)
    for topic in sorted(partitions):
        eligible = [member for member, topics in ordered if topic in topics]
        for part in range(partitions[topic]) if eligible else ():
            chosen = min(eligible, key=lambda member: len(result[member]))  # stable: first wins
            result[chosen].add((topic, part))
    return result


def partition_for(key: str | None, partitions: int, counter: int = 0) -> int:
    """The partition of a key: a stable hash, the same in every process and language.

    Python's ``hash`` is salted per process, so it cannot be used; CRC32 is stable and
    cheap. Keyless records are spread round-robin by ``counter``.
    """
    if key is None:
        return counter % partitions
    return zlib.crc32(key.encode()) % partitions
