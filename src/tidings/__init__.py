"""Tidings: event-driven microservices for Python.

The framework API that business code uses is all here; brokers and databases are
chosen by URL when a service is run (``tidings run``), never imported by business code.
"""

from tidings.envelope import Envelope, new_event_id
from tidings.messages import Command, Event, Message, MessageInfo
from tidings.reliability.retry import NonRecoverable, RetryPolicy
from tidings.service import Collection, Context, Service, Versioned

__all__ = [
    "Collection",
    "Command",
    "Context",
    "Envelope",
    "Event",
    "Message",
    "MessageInfo",
    "NonRecoverable",
    "RetryPolicy",
    "Service",
    "Versioned",
    "new_event_id",
]
