"""Dead letters are counted and traced by the kind the runtime decided, never by their wording."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from tidings import Context, Event, NonRecoverable, RetryPolicy, Service
from tidings.observability.metrics import Metrics
from tidings.observability.telemetry import Telemetry
from tidings.reliability.deadletter import DeadLetter, DeadLetterKind, dlq_topic
from tidings.runtime import Runtime
from tidings.store.sqlite import SQLiteStore
from tidings.testing.harness import drain
from tidings.transport.memory import MemoryTransport

_names = itertools.count()


class CacheStale(Event, topic="obs.cache", key="key"):
    key: str


failure: dict[str, type[Exception]] = {"error": RuntimeError}


async def invalidate_cache(event: CacheStale, ctx: Context) -> None:
    """A handler whose name starts like the word ``invalid`` (defined at module level, so
    that its name is just that)."""
    raise failure["error"]("cache backend refused")


async def _no_wait(seconds: float) -> None:
    return None


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "state.db"))
    await s.connect()
    yield s
    await s.close()


def dead_letters(metrics: Metrics, group: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "tidings_dead_letters_total",
        {"consumer_group": group, "topic": "obs.cache", "reason": reason},
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RuntimeError, DeadLetterKind.RETRIES_EXHAUSTED),
        (NonRecoverable, DeadLetterKind.NON_RECOVERABLE),
    ],
)
async def test_a_handler_named_like_a_kind_is_counted_by_its_real_kind(
    store: SQLiteStore, error: type[Exception], kind: DeadLetterKind
) -> None:
    # The reason reads "invalidate_cache failed after 3 attempt(s)": reading the kind back
    # from that text counted it as "invalid".
    svc = Service(f"cache{next(_names)}", retry=RetryPolicy(max_attempts=3, jitter=0.0))

    failure["error"] = error
    svc.on(CacheStale)(invalidate_cache)

    transport = MemoryTransport(f"memory://kinds-{next(_names)}")
    metrics = Metrics()
    rt = Runtime(svc, transport, store, sleep=_no_wait, observer=Telemetry(metrics=metrics))
    await rt.start(background=False)
    async with rt.unit_of_work() as ctx:
        ctx.publish(CacheStale(key="k1"))
    await drain(rt)

    assert dead_letters(metrics, svc.group, kind.value) == 1
    assert dead_letters(metrics, svc.group, "invalid") == 0
    [info] = [t for t in await transport.topics() if t.name == dlq_topic(svc.group)]
    [record] = [
        r for p, end in info.end_offsets.items() for r in await transport.read(info.name, p, 0, end)
    ]
    letter = DeadLetter.from_record(record)
    assert letter.kind is kind
    assert letter.reason.startswith("invalidate_cache ")
