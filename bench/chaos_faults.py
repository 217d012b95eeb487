"""The faults of a chaos run (:mod:`bench.chaos`): a seeded schedule, and the rig that
injects each fault and heals it.

Kinds, each injected at its scheduled second and healed before the next begins:

* ``kill_service`` - SIGKILL one service process (of two per service), start it again 2 s
  later;
* ``kill_leader`` - SIGKILL the broker node that leads ``shop.orders`` partition 0 (the
  Kafka partition leader, the JetStream stream leader), start it again 5 s later;
* ``rolling_restart`` - stop every broker node in turn (SIGTERM), each started again
  and serving before the next one stops;
* ``network_cut`` - one service loses the broker for longer than its session timeout
  (NATS: its proxies to all three nodes cut; Kafka: its processes frozen, see below);
* ``pg_latency`` - 200 ms added each way on every service's link to PostgreSQL, 15 s;
* ``pg_restart`` - PostgreSQL stopped as a crash would (``pg_ctl stop -m immediate``) and
  started 3 s later (the run's own PostgreSQL, never the shared one).

On NATS every link of a service runs through a Toxiproxy proxy of its own, so a cut is
that service's alone. Kafka clients learn broker addresses from the brokers' advertised
listeners, which are the same for every client; a per-service proxy would need a
listener per service on every broker. So on Kafka the "cut" freezes the service's
processes (SIGSTOP) instead: to the group the effect is the same (heartbeats stop, the
session times out, its partitions move on) and the member then comes back with stale
assignments and unflushed acks, which is the case that matters.

The schedule depends only on the seed, the kinds and the span, so a run is repeated by
giving the same ``--seed``.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from typing import Any

from shop.demo import Shop
from tidings.testing.clusters import NODES, Cluster, ScratchPostgres
from tidings.testing.toxiproxy import Toxiproxy

KINDS = (
    "kill_service", "kill_leader", "rolling_restart", "network_cut", "pg_latency", "pg_restart",
)  # fmt: skip
SERVICES = ("order", "inventory", "billing")
SESSION_TIMEOUT_S = {"nats": 6.0, "kafka": 10.0}  # the transports' defaults
LEADER_TOPIC = "shop.orders"


@dataclasses.dataclass
class Fault:
    kind: str
    at: float  # seconds after the orders start
    target: str  # a process, a service, or "" (filled in when injected: the leader node)
    started: float | None = None  # seconds after the orders start, as injected
    healed: float | None = None

    def line(self) -> str:
        return f"  t+{self.at:6.1f}s  {self.kind:<16} {self.target}"


def schedule(seed: int, span: float, repeat: int = 1) -> list[Fault]:
    """Every kind ``repeat`` times, in a seeded order, spread over ``span`` seconds (the
    first after a tenth of it, so the shop runs undisturbed first)."""
    rng = random.Random(seed)
    kinds = [k for _ in range(repeat) for k in KINDS]
    rng.shuffle(kinds)
    gap = span * 0.9 / len(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        target = ""
        if kind == "kill_service":
            target = rng.choice(SERVICES) + rng.choice(("", "-2"))
        elif kind == "network_cut":
            target = rng.choice(SERVICES)
        faults.append(Fault(kind, round(span * 0.1 + i * gap + rng.uniform(0, gap / 4), 1), target))
    return faults


class Rig:
    """The parts a fault acts on: the shop's processes, the broker cluster, the proxies
    and the run's PostgreSQL. ``pg_proxies`` and ``broker_proxies`` name the proxies of
    each service (``service -> [proxy names]``)."""

    def __init__(
        self,
        shop: Shop,
        cluster: Cluster,
        proxies: Toxiproxy,
        postgres: ScratchPostgres,
        pg_proxies: dict[str, list[str]],
        broker_proxies: dict[str, list[str]],
    ) -> None:
        self.shop, self.cluster, self.proxies, self.postgres = shop, cluster, proxies, postgres
        self.pg_proxies, self.broker_proxies = pg_proxies, broker_proxies
        self.lock = threading.Lock()  # the shop's process table: shared with the order loop

    def inject(self, fault: Fault, clock: Any) -> None:
        """Inject ``fault``, wait, heal it; ``clock()`` gives the run's seconds."""
        fault.started = clock()
        getattr(self, f"_{fault.kind}")(fault)
        fault.healed = clock()

    def _kill_service(self, fault: Fault) -> None:
        with self.lock:
            self.shop.kill(fault.target)
        time.sleep(2)
        with self.lock:
            self.shop.start(fault.target)

    def _kill_leader(self, fault: Fault) -> None:
        node = self.cluster.leader(LEADER_TOPIC, 0)
        fault.target = f"node {node} (leader of {LEADER_TOPIC}[0])"
        self.cluster.kill(node)
        time.sleep(5)
        self.cluster.start()

    def _rolling_restart(self, fault: Fault) -> None:
        fault.target = "nodes " + ", ".join(map(str, NODES))
        for node in NODES:
            self.cluster.stop(node)
            self.cluster.start()
            time.sleep(2)  # let the restarted node catch up before the next one goes

    def _network_cut(self, fault: Fault) -> None:
        service, seconds = fault.target, SESSION_TIMEOUT_S[self.cluster.engine] + 4
        if self.cluster.engine == "nats":
            fault.target = f"{service} (its proxies to every node cut {seconds:.0f}s)"
            self.proxies.cut(*self.broker_proxies[service])
            time.sleep(seconds)
            self.proxies.heal(*self.broker_proxies[service])
            return
        fault.target = f"{service} (its processes frozen {seconds:.0f}s)"
        processes = [n for n in self.shop.targets if n.split("-")[0] == service]
        with self.lock:
            for name in processes:
                self.shop.pause(name)
        time.sleep(seconds)
        with self.lock:
            for name in processes:
                self.shop.resume(name)

    def _pg_latency(self, fault: Fault) -> None:
        fault.target = "every service, +200 ms each way, 15s"
        names = [n for names in self.pg_proxies.values() for n in names]
        for name in names:
            self.proxies.latency(name, 200)
        time.sleep(15)
        self.proxies.heal(*names)

    def _pg_restart(self, fault: Fault) -> None:
        fault.target = "crash (-m immediate), start after 3s"
        self.postgres.crash()
        time.sleep(3)
        self.postgres.start()


def run_schedule(rig: Rig, faults: list[Fault], clock: Any, stop: threading.Event) -> None:
    """Inject each fault at its time (or as soon as the one before has healed); a fault
    that fails to inject or heal is recorded in its target and the schedule goes on."""
    for fault in faults:
        while clock() < fault.at and not stop.is_set():
            time.sleep(0.1)
        if stop.is_set():
            return
        try:
            rig.inject(fault, clock)
        except Exception as exc:
            fault.target += f" FAILED: {exc}"
            fault.healed = clock()
