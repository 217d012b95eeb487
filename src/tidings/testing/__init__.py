"""Test helpers for Tidings users and for the project's own suites.

* :class:`TestApp` runs services in process for unit tests (:mod:`tidings.testing.app`);
* :func:`records` reads a topic whole (:mod:`tidings.testing.topics`, which also reads one
  by broker URL), :func:`documents` a service's collection by store URL
  (:mod:`tidings.testing.state`);
* :mod:`tidings.testing.processes` runs services as real ``tidings run`` processes, and
  :func:`free_port` finds them a port;
* :mod:`tidings.testing.servers` skips (or, under CI, fails) tests whose server is down
  (it needs pytest, so it is not imported here);
* :mod:`tidings.testing.transport` and :mod:`tidings.testing.store` are the conformance
  suites every transport and store passes.
"""

from tidings.testing.app import TestApp
from tidings.testing.ports import free_port
from tidings.testing.state import documents, projected
from tidings.testing.topics import envelopes, records

__all__ = ["TestApp", "documents", "envelopes", "free_port", "projected", "records"]
