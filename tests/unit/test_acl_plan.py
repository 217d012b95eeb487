"""Least privilege derived from the services' code (tidings.acl.plan), on the shop."""

from __future__ import annotations

import pytest

from shop import billing, inventory, order
from tidings.acl.plan import KafkaAcl, kafka_acls, nats_permissions, needs
from tidings.service import Service


def test_inventory_needs_exactly_its_topics_its_group_and_the_runtime_topics() -> None:
    n = needs(inventory.service)
    assert n.reads == (
        "inventory.replay", "shop.billing", "shop.inventory.commands", "shop.orders", "shop.stock"
    )  # fmt: skip
    assert n.writes == ("inventory.dlq", "shop.inventory")
    acls = kafka_acls([n])
    user = "User:inventory"
    assert KafkaAcl(user, "TOPIC", "shop.inventory", "WRITE") in acls
    assert KafkaAcl(user, "GROUP", "inventory", "READ") in acls
    assert KafkaAcl(user, "TOPIC", "shop.orders", "WRITE") not in acls  # order's topic
    assert {a.principal for a in acls} == {user}
    assert {a.resource for a in acls} == {"TOPIC", "GROUP"}  # nothing on the cluster
    assert {a.name for a in acls if a.resource == "GROUP"} == {"inventory"}
    assert all("*" not in a.name for a in acls)  # no wildcard


def test_writes_come_from_publishes_and_each_service_gets_only_its_own() -> None:
    acls = kafka_acls([needs(s) for s in (order.service, inventory.service, billing.service)])
    writers = {a.name: a.principal for a in acls if a.operation == "WRITE"}
    assert writers["shop.orders"] == "User:order"
    assert writers["shop.billing"] == "User:billing"
    assert writers["billing.dlq"] == "User:billing"


def test_nats_permissions_allow_publishing_only_to_written_topics_and_own_group() -> None:
    permissions = nats_permissions(needs(billing.service))
    publish = permissions["publish"]["allow"]
    assert "tidings.shop.billing.*" in publish and "tidings.shop.accounts.*" in publish
    assert "tidings.shop.orders.*" not in publish
    assert "$KV.tidings_members.billing.>" in publish
    assert not any("inventory" in s for s in publish)
    assert permissions["subscribe"]["allow"] == ["_INBOX.>", "tidings-groups.billing"]


def test_a_service_that_needs_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="idle: declares no handler"):
        needs(Service("idle"))
