"""The Debezium decoder: change events to envelopes, tombstones skipped, bad input named."""

from __future__ import annotations

import pytest
from tests.unit.debezium_records import change_value, record

from tidings.cdc.debezium import Debezium, decode_change
from tidings.codec import DecodeError

TYPES = {"cust": "legacy.cust.changed"}


def test_an_insert_becomes_a_typed_envelope_keyed_by_the_row() -> None:
    value = change_value("cust", "c", after={"cust_no": "c1", "cr_lim": "10.00"}, lsn=42)
    envelope = decode_change(record("legacy.cust", {"cust_no": "c1"}, value), TYPES)
    assert envelope is not None
    assert envelope.type == "legacy.cust.changed"
    assert envelope.subject == "c1"
    assert envelope.data["operation"] == "create"
    assert envelope.data["after"] == {"cust_no": "c1", "cr_lim": "10.00"}
    assert envelope.data["position"] == 42
    assert envelope.data["table"] == "cust"


def test_the_same_change_replayed_gets_the_same_id_and_another_change_another() -> None:
    value = change_value("cust", "u", after={"cust_no": "c1"}, lsn=7)
    first = decode_change(record("legacy.cust", {"cust_no": "c1"}, value, offset=1), TYPES)
    again = decode_change(record("legacy.cust", {"cust_no": "c1"}, value, offset=9), TYPES)
    other = decode_change(
        record("legacy.cust", {"cust_no": "c1"}, change_value("cust", "u", lsn=8)), TYPES
    )
    assert first is not None and again is not None and other is not None
    assert first.id == again.id != other.id


def test_a_tombstone_is_skipped_and_a_delete_keeps_its_before() -> None:
    assert decode_change(record("legacy.cust", {"cust_no": "c1"}, b""), TYPES) is None
    value = change_value("cust", "d", before={"cust_no": "c1"})
    envelope = Debezium(TYPES)(record("legacy.cust", {"cust_no": "c1"}, value))
    assert envelope is not None
    assert (envelope.data["operation"], envelope.data["before"]) == ("delete", {"cust_no": "c1"})


def test_an_unmapped_table_gets_a_type_no_one_handles() -> None:
    envelope = decode_change(record("x", None, change_value("other", "c", after={})), TYPES)
    assert envelope is not None and envelope.type == "debezium.legacy.other"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "is JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"op": "x", "source": {}}', "op is 'x'"),
        (b'{"op": "c"}', "source is NoneType"),
        (b'{"op": "c", "source": {"schema": "s"}}', "names no table"),
        (b'{"op": "c", "source": {"table": "t"}, "after": 3}', "after is int"),
    ],
)
def test_what_is_not_a_change_event_says_why(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_change(record("legacy.cust", None, value), TYPES)


def _resourced(value: bytes, **source: object) -> bytes:
    """``value`` with its source's log position replaced by ``source``."""
    import json

    body = json.loads(value)
    del body["source"]["lsn"]
    body["source"].update(source)
    return json.dumps(body).encode()


def test_a_binlog_position_tells_changes_apart_and_no_position_is_refused() -> None:
    value = change_value("cust", "u", after={"cust_no": "c1"})
    key = {"cust_no": "c1"}
    first = decode_change(record("legacy.cust", key, _resourced(value, file="b.1", pos=4)), TYPES)
    second = decode_change(record("legacy.cust", key, _resourced(value, file="b.1", pos=9)), TYPES)
    assert first is not None and second is not None and first.id != second.id
    with pytest.raises(DecodeError, match="no log position"):
        decode_change(record("legacy.cust", key, _resourced(value)), TYPES)
