"""Observability: follow one request across every service.

* :mod:`.tracing` - OpenTelemetry spans (messaging semantic conventions), linked through
  the envelope's ``traceparent``;
* :mod:`.metrics` - Prometheus metrics on an HTTP endpoint per process;
* :mod:`.logs` - one logging setup (JSON lines or text) with the event on every line;
* :mod:`.causality` - the causal tree of a correlation, from its records;
* :mod:`.reading` - those records read from a window of the log in one pass (`tidings trace`);
* :mod:`.telemetry` - all of it as the runtime's observer: :func:`configure`.

Business code imports none of this: ``tidings run`` wires it in (see :mod:`tidings.host`).
"""

from tidings.observability.logs import setup_logging
from tidings.observability.telemetry import Telemetry, TelemetryConfig, configure

__all__ = ["Telemetry", "TelemetryConfig", "configure", "setup_logging"]
