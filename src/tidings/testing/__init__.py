"""Test helpers for Tidings users and for the project's own suites.

* :class:`TestApp` runs services in process for unit tests (:mod:`tidings.testing.app`);
* :mod:`tidings.testing.transport` and :mod:`tidings.testing.store` are the conformance
  suites every transport and store passes;
* :mod:`tidings.testing.servers` skips (or, under CI, fails) tests whose server is down.
"""

from tidings.testing.app import TestApp

__all__ = ["TestApp"]
