"""The codec and the consume path's decisions under fuzzing: nothing escapes, nothing hangs.

A short run for every test session; ``make fuzz`` runs a million cases (bench/fuzz.py).
"""

from __future__ import annotations

import json
import random
import time

from bench.fuzz import SERVICES, shop_seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings import codec
from tidings.envelope import Envelope
from tidings.records import Record
from tidings.testing.fuzz import OUTCOMES, Mutator, json_values, records, seed_records, settle

SEEDS = seed_records(shop_seeds())
BOUND = 2.0  # seconds one record may take to settle


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(SEEDS))
def test_every_record_is_settled_with_a_reason(record: Record) -> None:
    for service in SERVICES:
        started = time.perf_counter()
        outcome, reason = settle(service, record)
        assert time.perf_counter() - started < BOUND
        assert outcome in OUTCOMES
        assert (outcome == "dead_lettered") == bool(reason)


def test_mutated_records_never_escape() -> None:
    mutate = Mutator(SEEDS, random.Random(11))
    seen = set()
    for n in range(3000):
        outcome, _ = settle(SERVICES[n % 3], mutate(), build_letter=n % 50 == 0)
        seen.add(outcome)
    assert seen == set(OUTCOMES)  # the mutator reaches every outcome


def test_deeply_nested_json_is_undecodable_not_a_crash() -> None:
    # Found by the fuzzer: json.loads raised RecursionError, which escaped the consume loop.
    for value in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        record = Record("t", 0, 0, None, value, {}, 0.0)
        outcome, reason = settle(SERVICES[0], record)
        assert outcome == "dead_lettered"
        # pydantic-core's parser stops at its recursion limit (a ValueError); the standard
        # library's raised RecursionError, which the codec maps the same way.
        assert reason.startswith("undecodable: ") and (
            "recursion limit exceeded" in reason or "nested too deeply" in reason
        )


@settings(max_examples=200, deadline=None)
@given(
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    mode=st.sampled_from(["binary", "structured"]),
    subject=st.none() | st.text(min_size=1, max_size=20),
)
def test_what_is_encoded_decodes_to_the_same_envelope(
    data: dict[str, object], mode: codec.ContentMode, subject: str | None
) -> None:
    envelope = Envelope(id="e1", source="s", type="T", subject=subject, data=data)
    out = codec.encode(envelope, "t", mode)
    back = codec.decode(Record("t", 0, 0, out.key, out.value, dict(out.headers), 0.0))
    # Compared as JSON text: NaN never equals itself.
    assert json.dumps(back.data, sort_keys=True) == json.dumps(data, sort_keys=True)
    assert (back.id, back.type, back.subject, back.time) == ("e1", "T", subject, envelope.time)
