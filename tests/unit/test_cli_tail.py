"""The pure parts of `tidings tail` and `tidings publish`: durations, lines, envelopes."""

from __future__ import annotations

import json

import pytest

from tidings import codec
from tidings.cli.common import parse_duration
from tidings.cli.publish import make_envelope, parse_data
from tidings.cli.tail import render
from tidings.records import OutgoingRecord, Record


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "5x", "-5s", "5m 3s", "s5"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 30s"):
        parse_duration(text)


def as_record(outgoing: OutgoingRecord, offset: int = 7) -> Record:
    return Record(outgoing.topic, 1, offset, outgoing.key, outgoing.value, outgoing.headers, 1e9)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_event_renders_as_one_line_or_one_cloudevent(mode: codec.ContentMode) -> None:
    envelope = make_envelope("Greeted", parse_data('{"name": "Ada"}'), source="s", key="ada")
    record = as_record(codec.encode(envelope, "greetings", mode))
    line = render(record, as_json=False)
    assert line.endswith(f"  Greeted  ada  {envelope.id}  " + '{"name":"Ada"}')
    assert "\n" not in line
    event = json.loads(render(record, as_json=True))
    assert event["id"] == envelope.id and event["correlationid"] == envelope.id
    assert event["data"] == {"name": "Ada"} and event["subject"] == "ada"
    assert "causationid" not in event  # unset attributes are left out, as CloudEvents JSON does
    # What --json prints is a structured-mode CloudEvent: it decodes to the same envelope.
    again = codec.decode(Record("t", 0, 0, None, json.dumps(event).encode(), {}, 0.0))
    assert again == envelope


def test_a_record_that_is_not_an_event_is_shown_with_the_reason() -> None:
    record = as_record(OutgoingRecord("t", b'{"id": "x"}', "k"))
    line = render(record, as_json=False)
    assert "(undecodable)  k  1:7  not a CloudEvent: missing attribute(s) source, type" in line
    shown = json.loads(render(record, as_json=True))
    assert shown["undecodable"].startswith("not a CloudEvent")
    assert (shown["partition"], shown["offset"], shown["value"]) == (1, 7, '{"id": "x"}')


@pytest.mark.parametrize(
    ("text", "reason"), [("{", "not valid JSON"), ('"a"', "must be a JSON object")]
)
def test_data_must_be_a_json_object(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_data(text)


def test_since_all_reads_everything_and_the_trace_default_is_a_day() -> None:
    import time

    import typer

    from tidings.cli.common import parse_since
    from tidings.cli.trace import DEFAULT_WINDOW
    from tidings.observability.reading import DEFAULT_SINCE

    assert parse_since("all") is None and parse_since(" ALL ") is None
    assert parse_duration(DEFAULT_WINDOW) == DEFAULT_SINCE
    start = parse_since("2h")
    assert start is not None and abs(start - (time.time() - 7200)) < 5
    with pytest.raises(typer.Exit):
        parse_since("yesterday")
