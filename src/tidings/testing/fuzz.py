"""Fuzzing the codec and the consume path: what a hostile or broken producer could send.

Two drivers share one idea of an outcome. A record on a service's topic must end in one of
three ways: **handled** (decoded, validated, given to its handler), **skipped** (a type the
service does not handle) or **dead-lettered** with a kind and a reason. Nothing else may
happen: no exception may escape, no case may run longer than its time bound.

* :func:`records` is a Hypothesis strategy for the structure: random bytes and headers,
  structured and binary CloudEvents with attributes of the wrong JSON type, huge and
  deeply nested JSON, invalid UTF-8, wrong time formats, wrong ``dataschema`` versions,
  and valid events of the service's types with their fields garbled. The tests drive
  them through a real runtime (:class:`tidings.testing.TestApp`).
* :class:`Mutator` makes the same kinds of input a million times faster than Hypothesis
  can (plain ``random``, mutating valid seeds), and :func:`settle` runs one through the
  consume path's decisions without a broker: :func:`tidings.codec.decode`, dispatch by
  type, upcasting, validation, and the dead letter the runtime would publish. This is the
  bulk of ``make fuzz`` (``python -m bench.fuzz``).

Written by hand around Hypothesis: no fuzzing library knows CloudEvents records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pydantic
from hypothesis import strategies as st

from tidings import codec
from tidings.messages import Message, new_envelope, published_topic
from tidings.records import OutgoingRecord, Record
from tidings.reliability import policy
from tidings.reliability.deadletter import DeadLetterReason, dead_letter, read_dead_letters
from tidings.service import Service
from tidings.upcasting import NoUpcastPath, upcast

if TYPE_CHECKING:
    from tidings.testing.app import TestApp

TIMES = [
    "2026-12-01T10:00:00+00:00", "2026-12-01T10:00:00Z", "2026-12-01", "2026-13-45T99:99:99",
    "yesterday", "", "1733047200", "2026-12-01T10:00:00.123456789+00:00", "\u0663\u0664",
    "2026-12-01T10:00:00+25:00", "0000-00-00T00:00:00", "9999-12-31T23:59:59.999999-23:59",
]  # fmt: skip
SCHEMAS = [
    "urn:tidings:schema:{type}:1", "urn:tidings:schema:{type}:2", "urn:tidings:schema:{type}:0",
    "urn:tidings:schema:{type}:999999999999999999999", "urn:tidings:schema:{type}:-1",
    "urn:tidings:schema:{type}:", "urn:tidings:schema:{type}:one", "urn:tidings:schema:",
    "https://example.test/schema.json", "urn:tidings:schema:{type}:\u0663",
]  # fmt: skip
ATTRIBUTES = ["id", "source", "type", "specversion", "time", "subject", "dataschema",
              "datacontenttype", "correlationid", "causationid", "traceparent", "data"]  # fmt: skip
CONTENT_TYPES = ["application/json", "application/cloudevents+json", "text/plain", "", "\x00"]
OUTCOMES = ("handled", "skipped", "dead_lettered")


# -- the consume path's decisions, without a broker ------------------------------------------
def settle(service: Service, record: Record, *, build_letter: bool = True) -> tuple[str, str]:
    """(outcome, reason) of ``record`` for ``service``, as the runtime decides before its
    handler runs (``handled`` here: would be handed to the handler). With
    ``build_letter`` a dead letter is built as the runtime publishes it, and checked to
    carry its reason and kind (formatting its traceback is most of the cost)."""
    try:
        envelope = codec.decode(record)
    except codec.DecodeError as exc:
        return _dead(service, record, policy.undecodable(exc), exc, build_letter)
    spec = service.handlers.get(envelope.type)
    if spec is None:
        return "skipped", ""
    try:
        data = upcast(spec.message_type, envelope.data, envelope.version)
        spec.message_type.model_validate(data)
    except NoUpcastPath as exc:
        return _dead(service, record, policy.not_upcast(exc), exc, build_letter)
    except pydantic.ValidationError as exc:
        read = spec.message_type.message_info.version
        reason = policy.invalid(envelope.type, exc, envelope.version, read)
        return _dead(service, record, reason, exc, build_letter)
    return "handled", ""


def _dead(
    service: Service, record: Record, reason: DeadLetterReason, error: Exception, build: bool
) -> tuple[str, str]:
    if not reason.detail:
        raise AssertionError(f"dead letter of kind {reason.kind} without a reason")
    if build:
        letter = dead_letter(record, service.group, reason, error, 0)
        if not letter.headers.get("dlq-reason") or not letter.headers.get("dlq-kind"):
            raise AssertionError(f"dead letter without a reason or kind: {letter.headers}")
    return "dead_lettered", str(reason)


# -- fast mutation (the bulk) ----------------------------------------------------------------
def seed_records(seeds: Sequence[Message]) -> list[Record]:
    """Valid records of ``seeds``, in both content modes."""
    found = []
    for message in seeds:
        envelope = new_envelope(message, source="fuzz")
        topic = published_topic(type(message))
        for mode in ("binary", "structured"):
            found.append(as_record(codec.encode(envelope, topic, mode)))
    return found


def as_record(out: OutgoingRecord, offset: int = 0) -> Record:
    return Record(out.topic, 0, offset, out.key, out.value, dict(out.headers), 0.0)


class Mutator:
    """Garbles valid seed records the ways :func:`records` does, fast (plain ``random``)."""

    def __init__(self, seeds: Sequence[Record], rng: random.Random) -> None:
        self.seeds = list(seeds)
        self.rng = rng
        self.ways = [
            self.flip_bytes, self.truncate, self.random_bytes, self.wrong_attribute,
            self.wrong_header, self.drop_header, self.invalid_utf8, self.deep_json,
            self.huge_json, self.wrong_time, self.wrong_schema, self.garble_field,
            self.swap_mode,
        ]  # fmt: skip
        # Structured garbling is what finds bugs; raw bytes and size are cheap to vary.
        self.weights = [3, 2, 1, 6, 3, 2, 2, 1, 1, 4, 4, 8, 2]

    def __call__(self) -> Record:
        seed = self.rng.choice(self.seeds)
        rounds = 1 if self.rng.random() < 0.7 else self.rng.randint(2, 4)
        for _ in range(rounds):
            seed = self.rng.choices(self.ways, self.weights)[0](seed)
        return seed

    # each way: a record in, a garbled record out
    def _with(self, r: Record, value: bytes | None = None, headers: Any = None) -> Record:
        return Record(r.topic, 0, 0, r.key, r.value if value is None else value,
                      r.headers if headers is None else headers, 0.0)  # fmt: skip

    def flip_bytes(self, r: Record) -> Record:
        value = bytearray(r.value)
        for _ in range(self.rng.randint(1, 8)):
            if value:
                value[self.rng.randrange(len(value))] = self.rng.randrange(256)
        return self._with(r, bytes(value))

    def truncate(self, r: Record) -> Record:
        return self._with(r, r.value[: self.rng.randrange(len(r.value) + 1)])

    def random_bytes(self, r: Record) -> Record:
        return self._with(r, self.rng.randbytes(self.rng.randrange(64)))

    def invalid_utf8(self, r: Record) -> Record:
        cut = self.rng.randrange(len(r.value) + 1)
        bad = self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80", b"\x80"])
        return self._with(r, r.value[:cut] + bad + r.value[cut:])

    def deep_json(self, r: Record) -> Record:
        depth = self.rng.choice([50, 500, 5_000, 50_000])
        opener, closer = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        nested = opener * depth + b"1" + closer * depth
        if self.rng.random() < 0.5:  # as the payload of an otherwise good event
            return self._with(r, b'{"order_id":"o1","x":' + nested + b"}")
        return self._with(r, nested)

    def huge_json(self, r: Record) -> Record:
        size = self.rng.choice([10_000, 100_000, 1_000_000] if self.rng.random() < 0.1 else [1_000])
        return self._with(r, b'{"order_id":"' + b"x" * size + b'"}')

    def _structured(self, r: Record) -> dict[str, Any] | None:
        if "ce_id" in r.headers:
            return None
        body = _loads(r.value)
        return body if isinstance(body, dict) else None

    def _set(self, r: Record, name: str, value: Any) -> Record:
        body = self._structured(r)
        if body is None:  # binary mode: the attribute is a header (a string, or gone)
            headers = dict(r.headers)
            if name == "data":
                return self._with(r, json.dumps(value).encode())
            headers[f"ce_{name}"] = value if isinstance(value, str) else json.dumps(value)
            return self._with(r, headers=headers)
        body[name] = value
        return self._with(r, json.dumps(body).encode())

    def junk(self) -> Any:
        return self.rng.choice([
            None, 0, -1, 2**70, 1.5, float("inf") if self.rng.random() < 0.1 else 1e308, True,
            "", "x" * self.rng.randrange(300), [], [1, "a"], {}, {"nested": {"deeper": [None]}},
            "\ud800" if self.rng.random() < 0.2 else "\u202e",
        ])  # fmt: skip

    def wrong_attribute(self, r: Record) -> Record:
        return self._set(r, self.rng.choice(ATTRIBUTES), self.junk())

    def wrong_time(self, r: Record) -> Record:
        return self._set(r, "time", self.rng.choice(TIMES))

    def wrong_schema(self, r: Record) -> Record:
        event_type = r.headers.get("ce_type") or (self._structured(r) or {}).get("type", "")
        return self._set(r, "dataschema", self.rng.choice(SCHEMAS).format(type=event_type))

    def garble_field(self, r: Record) -> Record:
        body = self._structured(r)
        data = (body or {}).get("data") if body is not None else _loads(r.value)
        if not isinstance(data, dict) or not data:
            return r
        data = dict(data)
        field = self.rng.choice([*data, "unexpected"])
        if self.rng.random() < 0.3:
            data.pop(field, None)
        else:
            data[field] = self.junk()
        return self._set(r, "data", data)

    def wrong_header(self, r: Record) -> Record:
        headers = dict(r.headers)
        name = self.rng.choice([f"ce_{a}" for a in ATTRIBUTES] + ["content-type", "x-any"])
        headers[name] = self.rng.choice(
            ["", "\x00", "1.0", "0.3", "x" * 1000, *TIMES[:3], *CONTENT_TYPES, "\u2603"]
        )
        return self._with(r, headers=headers)

    def drop_header(self, r: Record) -> Record:
        if not r.headers:
            return r
        headers = dict(r.headers)
        headers.pop(self.rng.choice(list(headers)))
        return self._with(r, headers=headers)

    def swap_mode(self, r: Record) -> Record:
        if "ce_id" in r.headers:  # claim structured, keep a binary payload
            return self._with(r, headers={"content-type": codec.STRUCTURED_CONTENT_TYPE})
        body = self._structured(r) or {}
        headers = {f"ce_{k}": str(v) for k, v in body.items() if k != "data"}
        return self._with(r, headers=headers)


def _loads(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


# -- Hypothesis strategies (the structure) ---------------------------------------------------
_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20
)  # fmt: skip
_header_text = st.text(max_size=60) | st.sampled_from(TIMES + CONTENT_TYPES + ["1.0", "0.3"])


@st.composite
def records(draw: st.DrawFn, seeds: Sequence[Record]) -> Record:
    """One hostile or broken record for the topic of the seeds (see the module docstring)."""
    seed = draw(st.sampled_from(list(seeds)))
    kind = draw(st.sampled_from(["bytes", "headers", "attribute", "field", "mutate", "valid"]))
    if kind == "bytes":
        headers = draw(
            st.dictionaries(
                st.sampled_from(["ce_id", "ce_type", "content-type", "x"]), _header_text, max_size=3
            )
        )
        return Record(seed.topic, 0, 0, seed.key, draw(st.binary(max_size=200)), headers, 0.0)  # fmt: skip
    if kind == "headers":
        extra = draw(
            st.dictionaries(
                st.sampled_from([f"ce_{a}" for a in ATTRIBUTES] + ["content-type"]),
                _header_text,
                max_size=4,
            )
        )
        return Record(seed.topic, 0, 0, seed.key, seed.value, {**seed.headers, **extra}, 0.0)  # fmt: skip
    mutator = Mutator([seed], random.Random(draw(st.integers(0, 2**32))))
    if kind == "attribute":
        return mutator._set(seed, draw(st.sampled_from(ATTRIBUTES)), draw(json_values))
    if kind == "field":
        return mutator.garble_field(seed)
    if kind == "mutate":
        return mutator()
    return seed


# -- the consume path, through a real runtime ------------------------------------------------
@dataclasses.dataclass
class Tally:
    """What a runtime (or the direct driver) did with fuzzed records."""

    cases: int = 0
    handled: int = 0  # given to a handler, or found a duplicate
    skipped: int = 0  # a type the service does not handle
    dead_lettered: int = 0
    crashes: int = 0
    hangs: int = 0

    def add(self, other: Tally) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


async def consume(app: TestApp, batch: Sequence[Record], *, bound: float = 30.0) -> Tally:
    """Publish ``batch`` raw to its topics and let ``app``'s services consume it all.

    Checks every service settled every record (consumed = handled + duplicates + skipped
    + dead-lettered) and that each new dead letter carries a kind and a reason; raises
    AssertionError if not, TimeoutError past ``bound`` seconds (a hang).
    """
    before = {name: dataclasses.replace(r.stats) for name, r in app.runtimes.items()}
    letters = {name: len(await read_dead_letters(app.transport, name)) for name in app.runtimes}
    for topic in {r.topic for r in batch}:
        await app.transport.create_topic(topic)
    await app.transport.publish(
        [OutgoingRecord(r.topic, r.value, r.key, dict(r.headers)) for r in batch]
    )
    await asyncio.wait_for(app.drain(), bound)
    tally = Tally(cases=len(batch))
    for name, runtime in app.runtimes.items():
        now, then = runtime.stats, before[name]
        handled = now.handled - then.handled + now.duplicates - then.duplicates
        skipped = now.skipped - then.skipped
        dead = now.dead_lettered - then.dead_lettered
        consumed = now.consumed - then.consumed
        if consumed != handled + skipped + dead:
            raise AssertionError(
                f"{name}: consumed {consumed} but settled {handled + skipped + dead} "
                f"(handled {handled}, skipped {skipped}, dead-lettered {dead})"
            )
        new = (await read_dead_letters(app.transport, name))[letters[name] :]
        if len(new) != dead:
            raise AssertionError(f"{name}: {dead} dead-lettered but {len(new)} dead letters")
        for letter in new:
            if not letter.reason or letter.kind is None:
                raise AssertionError(f"{name}: dead letter without reason or kind: {letter}")
        tally.add(Tally(handled=handled, skipped=skipped, dead_lettered=dead))
    return tally
