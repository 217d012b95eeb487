"""Run the ``tidings`` command and pytest as real processes, for end-to-end tests.

Both run with a clean environment (only ``PATH`` and a wide ``COLUMNS``), so a test sees
what a user with just the package installed would see, and with a timeout, so a hung
command fails the test instead of stalling the suite.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# The console script installed next to this interpreter (what `pip install` puts on PATH).
TIDINGS = str(Path(sys.executable).parent / "tidings")
CLEAN_ENV: Mapping[str, str] = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}


def tidings(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``tidings ARGS...`` to completion; its exit code, stdout and stderr."""
    return subprocess.run(
        [TIDINGS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**CLEAN_ENV, **(env or {})},
    )


def pytest_in(
    directory: Path, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """pytest on ``args`` (test files) in ``directory``, as a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=directory,
        env=dict(CLEAN_ENV),
    )
