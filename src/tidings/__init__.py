"""Tidings: event-driven microservices for Python.

The framework API that business code uses is all here; brokers and databases are
chosen by URL when a service is run (``tidings run``), never imported by business code.
"""

from tidings.envelope import Envelope, new_event_id
from tidings.messages import Command, Event, Message
from tidings.reliability.retry import NonRecoverable, RetryPolicy
from tidings.service import Context, Service, State

__all__ = [
    "Command",
    "Context",
    "Envelope",
    "Event",
    "Message",
    "NonRecoverable",
    "RetryPolicy",
    "Service",
    "State",
    "new_event_id",
]
