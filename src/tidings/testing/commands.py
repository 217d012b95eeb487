"""Run the ``tidings`` command and pytest as real processes, for end-to-end tests.

Both run with a clean environment (only ``PATH`` and a wide ``COLUMNS``), so a test sees
what a user with just the package installed would see, and with a timeout, so a hung
command fails the test instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tidings.testing.processes import stop_process

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


@contextlib.contextmanager
def running(
    args: Sequence[str], *, cwd: Path, ready: Path, timeout: float = 60.0
) -> Iterator[subprocess.Popen[str]]:
    """Run ``args`` (a ``tidings run ... --ready-file READY`` command) until the block ends.

    Yields once ``ready`` exists; fails with the process's stderr if it ended first, or
    after ``timeout`` seconds. On the way out the process gets SIGTERM (SIGKILL after 30 s
    more), so the caller can check that it stopped cleanly (``returncode``).
    """
    process = subprocess.Popen(
        list(args), cwd=cwd, env=dict(CLEAN_ENV),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not ready.exists():
            why = process.stderr.read() if process.poll() is not None and process.stderr else ""
            raise AssertionError(f"{' '.join(args)} did not become ready: {why or 'timed out'}")
        yield process
    finally:
        stop_process(process, grace=30)
