"""A service with a registry: `tidings run --registry` registers what it publishes, checks
what it handles, and refuses to start on a break, in one line naming subject, rule, field."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from shop.order import service as order_service
from tidings.registry.client import RegistryClient, RegistryUnavailable
from tidings.registry.startup import ensure_schemas
from tidings.schemas import subject_for
from tidings.testing import free_port
from tidings.testing.commands import TIDINGS, running, tidings


@pytest.fixture
def store_url(tmp_path: Path) -> str:  # these tests need one registry, on SQLite
    return f"sqlite:///{tmp_path}/registry.db"


def write_service(
    directory: Path, name: str, topic: str, fields: str, handles: bool = False
) -> None:
    lines = [
        "from tidings import Context, Event, Service",
        "",
        f"class Greeted(Event, topic={topic!r}, key='name'):",
        *(f"    {line}" for line in fields.splitlines()),
        "",
    ]
    if handles:
        lines += [
            "service = Service('reader')",
            "",
            "@service.on",
            "async def read(event: Greeted, ctx: Context) -> None:",
            "    pass",
        ]
    else:
        lines.append("service = Service('writer', publishes=[Greeted])")
    (directory / f"{name}.py").write_text("\n".join(lines) + "\n")


def urls(tmp_path: Path, registry: str) -> list[str]:
    return [
        "--broker", f"sqlite:///{tmp_path}/log.db",
        "--store", f"sqlite:///{tmp_path}/{{service}}.db",
        "--registry", registry,
    ]  # fmt: skip


def test_a_breaking_change_stops_the_start_naming_subject_rule_and_field(
    tmp_path: Path, registry: str
) -> None:
    topic = f"greetings.{uuid.uuid4().hex[:8]}"
    subject = f"{topic}-Greeted"
    write_service(tmp_path, "v1", topic, "name: str\ntext: str")
    ready = tmp_path / "ready"
    with running([TIDINGS, "run", "v1:service", *urls(tmp_path, registry), "--ready-file", str(ready)],
                 cwd=tmp_path, ready=ready):  # fmt: skip
        pass
    assert httpx.get(f"{registry}/subjects/{subject}/versions").json() == [1]

    # A field added with a default is a compatible change: it starts, version 2.
    write_service(tmp_path, "v2", topic, 'name: str\ntext: str\nlang: str = "en"')
    ready.unlink()
    with running([TIDINGS, "run", "v2:service", *urls(tmp_path, registry), "--ready-file", str(ready)],
                 cwd=tmp_path, ready=ready):  # fmt: skip
        pass
    assert httpx.get(f"{registry}/subjects/{subject}/versions").json() == [1, 2]

    # A required field added breaks BACKWARD_TRANSITIVE: the process refuses to start.
    write_service(tmp_path, "v3", topic, "name: str\ntext: str\ntimes: int")
    refused = tidings("run", "v3:service", *urls(tmp_path, registry), cwd=tmp_path)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert subject in lines[0] and "BACKWARD_TRANSITIVE" in lines[0] and "times" in lines[0]
    assert "writer publishes Greeted" in lines[0]
    assert httpx.get(f"{registry}/subjects/{subject}/versions").json() == [1, 2]

    # A consumer whose class cannot read what was registered refuses too.
    write_service(tmp_path, "reader", topic, "name: str\nscore: float", handles=True)
    consumer = tidings("run", "reader:service", *urls(tmp_path, registry), cwd=tmp_path)
    assert consumer.returncode != 0
    [line] = consumer.stderr.strip().splitlines()
    assert subject in line and "reader handles Greeted" in line and "score" in line


def test_an_unreachable_registry_is_one_line_with_its_url(tmp_path: Path) -> None:
    write_service(tmp_path, "v1", "greetings.nowhere", "name: str")
    url = f"http://127.0.0.1:{free_port()}"
    refused = tidings("run", "v1:service", *urls(tmp_path, url), cwd=tmp_path)
    assert refused.returncode != 0
    [line] = refused.stderr.strip().splitlines()
    assert f"schema registry {url} is unreachable" in line


async def test_ids_are_cached_so_a_steady_state_makes_no_calls(registry: str) -> None:
    async with RegistryClient(registry) as client:
        found = await ensure_schemas(order_service, client)
        assert set(found.ids) == set(order_service.publishes)
        calls = client.calls
        for message_type, schema_id in found.ids.items():
            from tidings.schemas import schema_text

            again = await client.register(
                subject_for(message_type), found.schema_type, schema_text(message_type, "JSON")
            )
            assert again == schema_id
        assert client.calls == calls
    with pytest.raises(RegistryUnavailable):
        async with RegistryClient(f"http://127.0.0.1:{free_port()}") as nowhere:
            await nowhere.mode("s")
