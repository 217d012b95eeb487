"""Refusals on the secured brokers (scripts/services up kafka-secure nats-secure), with the
shop's ACLs from `tidings acl apply`: a publish to a topic the service does not own, a
join of another service's group and a wrong password each end as ONE clear line naming
the user (the service), the resource and the missing permission, within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidings.records import OutgoingRecord
from tidings.testing.secure import service_url
from tidings.transport import open_transport
from tidings.transport.errors import AuthenticationFailed, NotAuthorized

SCHEMES = ["kafka", "nats"]


@pytest.fixture(params=SCHEMES)
def granted(request: pytest.FixtureRequest, secured_users) -> str:  # type: ignore[no-untyped-def]
    """The scheme, once the shop's users and ACLs are applied (and checked: no drift)."""
    scheme: str = request.param
    secured_users(scheme)
    return scheme


@pytest.fixture
def passwords(granted: str, secured_users) -> Path:  # type: ignore[no-untyped-def]
    return secured_users(granted)


def tidings(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "TIDINGS_LOG_LEVEL": "ERROR"},
    )  # fmt: skip


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    # rich may wrap a long line in a narrow terminal: join the wrapped parts
    return [" ".join(result.stderr.split())] if result.stderr.strip() else []


def test_publishing_to_a_topic_the_service_does_not_own_is_one_clear_line(
    granted: str, passwords: Path
) -> None:
    # A refusal waited out would take the publish timeout (60 s here); the bound below
    # leaves room for starting the CLI on a loaded machine (~10 s), and no more.
    waits = "delivery_timeout_ms=60000" if granted == "kafka" else "publish_timeout=60"
    url = f"{service_url(granted, passwords, 'inventory')}&{waits}"
    started = time.monotonic()
    result = tidings("publish", "shop.orders", "--type", "shop.OrderPlaced", "--data", "{}",
                     "--broker", url)  # fmt: skip
    took = time.monotonic() - started
    assert result.returncode != 0, result.stdout
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    line = lines[0]
    assert "user inventory" in line and "'shop.orders'" in line, line
    assert ("WRITE on topic" in line) if granted == "kafka" else ("publish allow" in line)
    assert took < 30, took  # (the shop's secured runs show its own topics work)


async def test_joining_another_services_group_is_refused_naming_group_and_permission(
    granted: str, passwords: Path
) -> None:
    transport = await open_transport(service_url(granted, passwords, "inventory"))
    started = time.monotonic()
    try:
        with pytest.raises(NotAuthorized) as refused:
            sub = await transport.subscribe("billing", ["shop.orders"])
            for _ in range(30):  # Kafka says so at the first fetch, after the join
                await sub.fetch(10, 0.5)
    finally:
        await transport.close()
    text = str(refused.value)
    assert "user inventory" in text and "group 'billing'" in text, text
    assert "READ on group" in text if granted == "kafka" else "tidings_members.billing" in text
    assert time.monotonic() - started < 15


async def test_publishing_directly_raises_not_authorized_without_waiting_for_a_timeout(
    granted: str, passwords: Path
) -> None:
    transport = await open_transport(service_url(granted, passwords, "billing"))
    try:
        started = time.monotonic()
        with pytest.raises(NotAuthorized, match=r"user billing .*'shop\.inventory'"):
            await transport.publish([OutgoingRecord("shop.inventory", b"{}", "k", {})])
        assert time.monotonic() - started < 10
    finally:
        await transport.close()


def test_a_wrong_password_fails_the_service_at_once_with_one_line(
    granted: str, tmp_path: Path
) -> None:
    (tmp_path / "inventory.pw").write_text("not-the-password-4711\n")
    url = service_url(granted, tmp_path, "inventory")
    started = time.monotonic()
    result = tidings("run", "shop.inventory:service", "--broker", url,
                     "--store", f"sqlite:///{tmp_path}/inventory.db")  # fmt: skip
    assert result.returncode != 0
    assert time.monotonic() - started < 20
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "user inventory was refused" in lines[0], lines[0]
    assert "not-the-password-4711" not in result.stdout + result.stderr


async def test_wrong_password_raises_authentication_failed_within_seconds(
    granted: str, tmp_path: Path
) -> None:
    (tmp_path / "order.pw").write_text("wrong")
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="user order was refused"):
        await open_transport(service_url(granted, tmp_path, "order"))
    assert time.monotonic() - started < 5
