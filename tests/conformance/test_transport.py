"""Every transport against the transport conformance suite (brokers: conftest.BROKERS)."""

from __future__ import annotations

from tidings.testing.transport import TransportConformance


class TestTransport(TransportConformance):
    pass
