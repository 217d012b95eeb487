"""NATS JetStream: ``nats://host:port`` (see :mod:`.transport`)."""

from tidings.transport.nats.transport import NatsTransport

__all__ = ["NatsTransport"]
