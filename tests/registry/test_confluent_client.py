"""The embedded registry is the real API: confluent-kafka's own SchemaRegistryClient
registers, looks up, reads and checks schemas in it over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest

from tidings.testing.servers import require_module

schema_registry = require_module(
    "confluent_kafka.schema_registry", "the embedded registry is driven by Confluent's client"
)
Schema = schema_registry.Schema
SchemaRegistryClient = schema_registry.SchemaRegistryClient
SchemaRegistryError = schema_registry.error.SchemaRegistryError


def avro(*fields: dict[str, object]) -> str:
    return json.dumps({"type": "record", "name": "OrderPlaced", "fields": list(fields)})


ORDER_ID = {"name": "order_id", "type": "string"}
V1 = avro(ORDER_ID)
V2 = avro(ORDER_ID, {"name": "note", "type": "string", "default": ""})  # added with a default
BREAKS = avro(ORDER_ID, {"name": "amount", "type": "long"})  # added without a default


def test_register_look_up_read_by_id_and_versions(registry: str) -> None:
    client = SchemaRegistryClient({"url": registry})
    subject = "shop.orders-OrderPlaced"
    first = client.register_schema(subject, Schema(V1, "AVRO"))
    second = client.register_schema(subject, Schema(V2, "AVRO"))
    assert second != first
    # The same schema again is the same id and no new version.
    assert (
        SchemaRegistryClient({"url": registry}).register_schema(subject, Schema(V1, "AVRO"))
        == first
    )
    assert client.get_subjects() == [subject]
    assert client.get_versions(subject) == [1, 2]
    found = client.lookup_schema(subject, Schema(V2, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (second, 2, subject)
    latest = client.get_latest_version(subject)
    assert (latest.version, json.loads(latest.schema.schema_str)) == (2, json.loads(V2))
    assert json.loads(client.get_version(subject, 1).schema.schema_str) == json.loads(V1)
    fresh = SchemaRegistryClient({"url": registry})  # no cache: read over HTTP
    assert json.loads(fresh.get_schema(first).schema_str) == json.loads(V1)
    # One schema, one id, whatever the subject.
    assert client.register_schema("shop.other-OrderPlaced", Schema(V1, "AVRO")) == first


def test_json_schemas_are_registered_with_their_type(registry: str) -> None:
    client = SchemaRegistryClient({"url": registry})
    schema = json.dumps({"type": "object", "properties": {"order_id": {"type": "string"}}})
    schema_id = client.register_schema("t-Json", Schema(schema, "JSON"))
    fresh = SchemaRegistryClient({"url": registry}).get_schema(schema_id)
    assert fresh.schema_type == "JSON"
    assert json.loads(fresh.schema_str) == json.loads(schema)


def test_errors_have_confluents_codes(registry: str) -> None:
    client = SchemaRegistryClient({"url": registry})
    with pytest.raises(SchemaRegistryError) as missing:
        client.get_versions("nobody")
    assert (missing.value.http_status_code, missing.value.error_code) == (404, 40401)
    client.register_schema("s", Schema(V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as unknown:
        client.lookup_schema("s", Schema(V2, "AVRO"))
    assert unknown.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as no_version:
        client.get_version("s", 9)
    assert no_version.value.error_code == 40402
    with pytest.raises(SchemaRegistryError) as no_id:
        SchemaRegistryClient({"url": registry}).get_schema(999)
    assert no_id.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as invalid:
        client.register_schema("s", Schema('{"type": "record", "name": "X"}', "AVRO"))
    assert (invalid.value.http_status_code, invalid.value.error_code) == (422, 42201)
    assert "fields" in invalid.value.error_message
    with pytest.raises(SchemaRegistryError) as bad_level:
        client.set_compatibility("s", "SIDEWAYS")
    assert bad_level.value.error_code == 42203
    # The bodies themselves, as any HTTP client sees them.
    reply = httpx.get(f"{registry}/subjects/nobody/versions")
    assert reply.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert reply.json() == {"error_code": 40401, "message": "Subject 'nobody' not found."}
    accepted = httpx.post(
        f"{registry}/subjects/s",
        content=json.dumps({"schema": V1}),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    assert accepted.status_code == 200 and accepted.json()["version"] == 1


def test_incompatible_registration_is_409_naming_the_field(registry: str) -> None:
    client = SchemaRegistryClient({"url": registry})
    client.register_schema("s", Schema(V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema("s", Schema(BREAKS, "AVRO"))
    assert refused.value.http_status_code == 409
    assert "amount" in refused.value.error_message
    assert "BACKWARD_TRANSITIVE" in refused.value.error_message  # the project's default
    assert client.get_versions("s") == [1]


@pytest.mark.parametrize(
    ("mode", "accepted", "refused"),
    [
        # BACKWARD: the new schema reads old data. A field with a default reads it; one
        # without cannot.
        ("BACKWARD", V2, BREAKS),
        # FORWARD: old readers read new data. Adding a field is fine for them; removing
        # order_id (which they need, no default) is not.
        ("FORWARD", BREAKS, avro({"name": "note", "type": "string", "default": ""})),
        ("FULL", V2, BREAKS),
        ("NONE", BREAKS, None),
    ],
)
def test_compatibility_per_mode(
    registry: str, mode: str, accepted: str, refused: str | None
) -> None:
    client = SchemaRegistryClient({"url": registry})
    client.register_schema("s", Schema(V1, "AVRO"))
    assert client.set_compatibility("s", mode) == {"compatibility": mode}
    assert client.get_compatibility("s") == mode
    assert client.test_compatibility("s", Schema(accepted, "AVRO")) is True
    if refused is not None:
        assert client.test_compatibility("s", Schema(refused, "AVRO")) is False
        with pytest.raises(SchemaRegistryError) as no:
            client.register_schema("s", Schema(refused, "AVRO"))
        assert no.value.http_status_code == 409
    assert client.register_schema("s", Schema(accepted, "AVRO")) > 0


def test_transitive_checks_every_version(registry: str) -> None:
    client = SchemaRegistryClient({"url": registry})
    client.set_compatibility(level="BACKWARD")
    assert client.get_compatibility() == "BACKWARD"
    note_string = avro(ORDER_ID, {"name": "note", "type": "string", "default": ""})
    note_long = avro(ORDER_ID, {"name": "note", "type": "long", "default": 0})
    client.register_schema("plain", Schema(note_string, "AVRO"))
    client.register_schema("plain", Schema(V1, "AVRO"))
    # Reads version 2 (no note: default used), so BACKWARD takes it...
    assert client.register_schema("plain", Schema(note_long, "AVRO")) > 0
    client.register_schema("strict", Schema(note_string, "AVRO"))
    client.register_schema("strict", Schema(V1, "AVRO"))
    client.set_compatibility("strict", "BACKWARD_TRANSITIVE")
    # ...BACKWARD_TRANSITIVE does not: version 1 wrote note as a string.
    with pytest.raises(SchemaRegistryError) as no:
        client.register_schema("strict", Schema(note_long, "AVRO"))
    assert "note" in no.value.error_message and "version 1" in no.value.error_message


def test_config_and_deletes(registry: str) -> None:
    client = SchemaRegistryClient({"url": registry})
    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"
    client.register_schema("s", Schema(V1, "AVRO"))
    client.register_schema("s", Schema(V2, "AVRO"))
    with pytest.raises(SchemaRegistryError) as unset:
        client.get_compatibility("s")
    assert unset.value.error_code == 40408
    assert httpx.get(f"{registry}/config/s?defaultToGlobal=true").json() == {
        "compatibilityLevel": "BACKWARD_TRANSITIVE"
    }
    assert client.delete_version("s", 2) == 2
    assert client.get_versions("s") == [1]
    assert client.delete_subject("s") == [1]
    assert client.get_subjects() == []
    assert client.delete_subject("s", permanent=True) == [1, 2]
    with pytest.raises(SchemaRegistryError) as gone:
        client.delete_subject("s")
    assert gone.value.error_code == 40401
