"""Run services in one process, step by step, for unit tests (no background tasks)."""

from __future__ import annotations

from tidings.runtime import Runtime


async def drain(*runtimes: Runtime, max_rounds: int = 1000) -> int:
    """Relay and consume until no runtime has anything left to do; returns records handled.

    Each runtime must have been started with ``start(background=False)``, so that this
    loop is the only thing that runs.
    """
    total = 0
    for _ in range(max_rounds):
        moved = 0
        for rt in runtimes:
            while await rt.relay.relay_once():
                moved += 1
            if rt.subscription is not None:
                n = await rt.poll(timeout=0)
                moved += n
                total += n
            moved += await rt.project_once()
        if moved == 0:
            return total
    raise AssertionError(f"not quiet after {max_rounds} rounds")
