"""The errors a transport raises on purpose; everything else is a bug or the engine's own."""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BrokerUnavailable",
    "InvalidBrokerURL",
    "NotAssigned",
    "NotAuthorized",
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


class AuthenticationFailed(TransportError):
    """The broker refused the URL's user or password, or its TLS certificate did not
    verify: waiting does not help, so it is raised at once with the user named."""


class NotAuthorized(TransportError):
    """The broker refused an operation for want of a permission (an ACL); the message
    names the user, the resource (topic, group, subject) and the missing permission."""
