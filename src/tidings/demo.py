"""What ``tidings demo`` hands to an app's demo: its entry point's contract.

An app ships a demo as a function that takes :class:`DemoOptions` and returns whether
every check it made passed (the command exits 0 if so, 1 if not)::

    def main(options: DemoOptions) -> bool: ...

``tidings demo package.module:function`` runs it (``package.module`` alone means its
``main``); with no argument, the reference shop's (``shop.demo:main``). The options are
the command line's, with the run's directory made and the broker and store URLs filled
in: a fresh SQLite log and SQLite stores in that directory unless given. An app uses the
options that make sense for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

DEFAULT_DEMO = "shop.demo:main"


@dataclasses.dataclass(frozen=True, slots=True)
class DemoOptions:
    workdir: Path  # this run's directory, for logs and data; it exists
    broker: str  # broker URL, for `tidings run --broker`
    store: str  # store URL, for `tidings run --store` ({service}: the service's name)
    orders: int = 50  # how much work to give the system
    port: int = 0  # HTTP port of the app's entry service (0: any free port)
    concurrency: int = 16  # requests in flight at once
    timeout: float = 120.0  # seconds to wait for the work to settle
    seed: str = "tidings"  # seed of whatever the demo draws at random
    dashboard: bool = False  # serve the web dashboard, keep running until Ctrl-C
    dashboard_port: int = 8050
    open_browser: bool = True  # open the dashboard in a browser
    traces: str = ""  # tracing of the services (TIDINGS_TRACES), "" for none
    metrics: bool = False  # Prometheus metrics per service
    saga: str = "choreography"  # how the app coordinates its steps (the shop: or orchestration)
    relay: str = "polling"  # who publishes each service's outbox (see relays())


DemoMain = Callable[[DemoOptions], bool]


def relays(spec: str, services: Iterable[str]) -> dict[str, str]:
    """The relay of each service a ``--relay`` value gives: ``polling`` or ``debezium``
    for all, or ``SERVICE=RELAY,...`` (the others poll); ValueError naming what is wrong."""
    from tidings.reliability.debezium import RELAYS

    names = list(services)
    if "=" not in spec:
        if spec not in RELAYS:
            raise ValueError(
                f"--relay {spec!r}: expected {' or '.join(RELAYS)}, or SERVICE=RELAY,..."
            )
        return dict.fromkeys(names, spec)
    chosen = dict.fromkeys(names, "polling")
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, relay = item.partition("=")
        if name not in chosen or relay not in RELAYS:
            raise ValueError(
                f"--relay {item!r}: expected SERVICE=RELAY with SERVICE one of "
                f"{', '.join(names)} and RELAY {' or '.join(RELAYS)}"
            )
        chosen[name] = relay
    return chosen
