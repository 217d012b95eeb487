"""``tidings demo [APP]``: run an app's demo entry point (see :mod:`tidings.demo`).

This module knows no app: it finds the entry point, makes the run's directory under
``.tidings/``, fills in the default broker and store (fresh SQLite files there) and calls
the entry point with the options. The reference shop's demo is ``shop.demo:main``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tidings.demo import DEFAULT_DEMO, DemoMain, DemoOptions
from tidings.host import load_object


def load_demo(target: str = "") -> DemoMain:
    """``package.module:function`` (``package.module`` alone: its ``main``; nothing: the
    reference shop's demo) -> the function."""
    target = target or DEFAULT_DEMO
    path = target if ":" in target else f"{target}:main"
    try:
        entry = load_object(path)
    except ModuleNotFoundError as exc:
        raise LookupError(f"demo {path}: no module {exc.name!r} (is the app installed?)") from None
    if not callable(entry):
        raise TypeError(f"demo {path} is a {type(entry).__name__}, not a function")
    return entry  # type: ignore[no-any-return]


def demo_options(broker: str, store: str, **given: Any) -> DemoOptions:
    """The options of one run: a fresh directory, and the broker and store URLs given or
    SQLite files in it."""
    workdir = Path(".tidings") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    return DemoOptions(
        workdir=workdir,
        broker=broker or f"sqlite:///{workdir}/log.db",
        store=store or f"sqlite:///{workdir}/{{service}}.db",
        **given,
    )
