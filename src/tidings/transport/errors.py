"""The errors a transport raises on purpose; everything else is a bug or the engine's own."""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "InvalidBrokerURL",
    "NotAssigned",
    "RecordTooLarge",
    "TransportError",
    "Unsupported",
]


class TransportError(Exception):
    """Base of the errors a transport raises on purpose."""


class BrokerUnavailable(TransportError):
    """The broker cannot be reached; the message names the URL and how to start it."""


class InvalidBrokerURL(TransportError, ValueError):
    """A broker URL that names no known transport, or is missing a part."""


class RecordTooLarge(TransportError):
    """A record exceeds the transport's ``max_record_bytes``."""


class NotAssigned(TransportError):
    """An ack or nack for a partition this member no longer owns (it was reassigned)."""


class Unsupported(TransportError):
    """What this broker cannot do (a capability it lacks, see ``Capabilities``); the
    message says "not supported on <platform>" and what was asked."""
