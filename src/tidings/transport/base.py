"""The names the framework imports from the transport layer, in one place.

Kept for compatibility: the contract itself is :mod:`.contract`, the errors
:mod:`.errors`, partitioning and assignment :mod:`.placement`, and :func:`read_topic`
:mod:`.tools`. Code inside the transport layer imports from those modules, never from
this one.
"""

from __future__ import annotations

from tidings.records import OutgoingRecord, Record
from tidings.transport.contract import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_PARTITIONS,
    Administration,
    Capabilities,
    Delivery,
    Publisher,
    Subscriber,
    Subscription,
    TopicInfo,
    Transport,
)
from tidings.transport.errors import (
    BrokerUnavailable,
    InvalidBrokerURL,
    NotAssigned,
    RecordTooLarge,
    TransportError,
    Unsupported,
)
from tidings.transport.placement import assign, partition_for
from tidings.transport.tools import read_topic

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_PARTITIONS",
    "Administration",
    "BrokerUnavailable",
    "Capabilities",
    "Delivery",
    "InvalidBrokerURL",
    "NotAssigned",
    "OutgoingRecord",
    "Publisher",
    "Record",
    "RecordTooLarge",
    "Subscriber",
    "Subscription",
    "TopicInfo",
    "Transport",
    "TransportError",
    "Unsupported",
    "assign",
    "partition_for",
    "read_topic",
]
