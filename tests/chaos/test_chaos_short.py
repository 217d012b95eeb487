"""The short chaos run: the shop on the three-node NATS cluster, two processes per service,
240 orders while one fault of each kind is injected; nothing may be lost or charged twice.
``make chaos`` runs the long one (10,000 orders, on NATS and Kafka)."""

from __future__ import annotations

import os

import pytest
from bench.chaos import held, run
from bench.chaos_faults import KINDS

from tidings.testing.clusters import Cluster
from tidings.testing.servers import require, skip_or_fail
from tidings.testing.toxiproxy import Toxiproxy, ToxiproxyError

pytestmark = pytest.mark.slow


def test_the_shop_survives_one_fault_of_each_kind_on_a_nats_cluster() -> None:
    require(Cluster("nats-cluster").url, "postgresql://127.0.0.1:5432/tidings")
    probe = Toxiproxy()
    try:
        probe.version()
    except ToxiproxyError as exc:
        skip_or_fail(str(exc))
    finally:
        probe.close()
    if os.geteuid() != 0:
        skip_or_fail("the chaos run starts its own PostgreSQL as the postgres OS user: run as root")

    result = run("nats", orders=240, rate=4, seed=11, repeat=1, settle=240, results=None)

    assert result["faults_by_kind"] == dict.fromkeys(KINDS, 1), result["faults"]
    assert not [f for f in result["faults"] if "FAILED" in f["target"]]
    assert result["accepted"] > 200, result["refused"]  # only a PostgreSQL crash refuses
    assert (result["lost"], result["double_charged"]) == (0, 0)
    assert result["settled"] == result["accepted"]
    assert result["invariants_hold"]
    assert result["dead_letters"] == []
    assert set(result["lag"]) >= {"order", "inventory", "billing"}
    assert not any(result["lag"].values()), result["lag"]
    assert held(result)
