"""What a service needs from its broker, derived from its code, and nothing more.

A :class:`~tidings.service.Service` already says what it reads (its handlers' topics, and
its projections' topics), what it writes (``publishes=[...]``) and which consumer group
it joins (its name). The runtime adds its own topics: the group's dead letters
(``<group>.dlq``, written) and replays (``<group>.replay``, read; written by the operator's
``tidings dlq replay``). :func:`needs` turns that into :class:`Needs`, and:

* :func:`kafka_acls` into Kafka ACLs for principal ``User:<service>``: READ (which
  implies DESCRIBE) on every topic read, WRITE on every topic written, CREATE on all of
  them (the runtime creates its topics at start, and a topic is created on first
  publish), READ on the group. Nothing on the cluster, no wildcard: a publish to any
  other topic or a join of any other group is refused by the broker.
* :func:`nats_permissions` into a NATS user's permissions: publish to the subjects of
  the topics written (``tidings.<topic>.*``), to the group's keys in the membership and
  lease buckets and its announcements (``tidings-groups.<group>``, which it also
  subscribes to), and to the JetStream API (``$JS.API.>``, which every JetStream client
  needs: NATS cannot narrow reading by subject, see docs/security.md); subscribe to
  replies only (``_INBOX.>``), and acknowledge deliveries (``$JS.ACK.>``).

A service that declares no ``publishes`` is planned as publishing nothing (but dead
letters): what it publishes anyway is refused by the broker, which is the safe side.
Pure functions: applying is in :mod:`.kafka` and :mod:`.nats`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from tidings.messages import published_topic
from tidings.reliability.deadletter import dlq_topic, replay_topic
from tidings.service import Service

__all__ = ["KafkaAcl", "Needs", "kafka_acls", "nats_permissions", "needs"]


@dataclasses.dataclass(frozen=True)
class Needs:
    """What one service reads, writes and joins."""

    service: str
    group: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclasses.dataclass(frozen=True, order=True)
class KafkaAcl:
    """One ALLOW binding: ``principal`` may ``operation`` on ``resource`` ``name`` (literal)."""

    principal: str  # User:<service>
    resource: str  # TOPIC | GROUP
    name: str
    operation: str  # READ | WRITE | CREATE | DESCRIBE

    def __str__(self) -> str:
        return f"{self.principal} {self.operation} {self.resource.lower()}:{self.name}"


def needs(service: Service) -> Needs:
    """What ``service`` needs (see the module rules); a ValueError if it cannot be said."""
    if not service.publishes and not service.handlers and not service.projections:
        raise ValueError(
            f"{service.name}: declares no handler, projection or publishes=[...], so it"
            " needs nothing from the broker; is it the service you meant?"
        )
    group = service.group
    reads = {*service.topics(), replay_topic(group)}
    for projection in service.projections.values():
        reads.update(projection.topics())
    writes = {published_topic(t) for t in service.publishes} | {dlq_topic(group)}
    return Needs(service.name, group, tuple(sorted(reads)), tuple(sorted(writes)))


def kafka_acls(needed: Iterable[Needs]) -> list[KafkaAcl]:
    """The Kafka ACLs of the services, sorted (see the module rules)."""
    acls: set[KafkaAcl] = set()
    for n in needed:
        user = f"User:{n.service}"
        for topic in n.reads:
            acls.add(KafkaAcl(user, "TOPIC", topic, "READ"))
        for topic in n.writes:
            acls.add(KafkaAcl(user, "TOPIC", topic, "WRITE"))
        for topic in {*n.reads, *n.writes}:
            acls.add(KafkaAcl(user, "TOPIC", topic, "CREATE"))
        if n.reads:
            acls.add(KafkaAcl(user, "GROUP", n.group, "READ"))
    return sorted(acls)


def nats_permissions(n: Needs) -> dict[str, dict[str, list[str]]]:
    """The NATS ``permissions`` block of the service's user (see the module rules)."""
    publish = [
        "$JS.API.>",
        "$JS.ACK.>",  # acks go to the delivered message's reply subject
        f"$KV.tidings_members.{n.group}.>",
        f"$KV.tidings_leases.{n.group}.>",
        f"tidings-groups.{n.group}",
        *(f"tidings.{topic}.*" for topic in n.writes),
    ]
    subscribe = ["_INBOX.>", f"tidings-groups.{n.group}"]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
