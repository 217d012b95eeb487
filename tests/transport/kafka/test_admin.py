"""KafkaAdmin's ListOffsets: a partition whose leader is moving is asked again."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ListOffsetsResultInfo

from tidings.transport.kafka.admin import KafkaAdmin
from tidings.transport.kafka.config import KafkaSettings, KafkaTransportError


class Answers:
    """An AdminClient stand-in whose ``list_offsets`` answers from a script, one error code
    (or None: offset 7) per partition per call (a unit test of the retry rule)."""

    def __init__(self, *script: dict[tuple[str, int], int | None]) -> None:
        self.script = list(script)
        self.asked: list[set[tuple[str, int]]] = []

    def poll(self, timeout: float) -> int:
        return 0

    def list_offsets(self, specs: dict[TopicPartition, Any], **_: Any) -> dict[Any, Future[Any]]:
        answers = self.script.pop(0)
        self.asked.append({(tp.topic, tp.partition) for tp in specs})
        futures: dict[Any, Future[Any]] = {}
        for tp in specs:
            future: Future[Any] = Future()
            code = answers.get((tp.topic, tp.partition))
            if code is None:
                future.set_result(ListOffsetsResultInfo(7, -1, -1))
            else:
                future.set_exception(KafkaException(KafkaError(code)))
            futures[tp] = future
        return futures


def admin_with(answers: Answers, connect_timeout_ms: int = 10_000) -> KafkaAdmin:
    admin = KafkaAdmin(
        KafkaSettings.from_url(f"kafka://127.0.0.1:1?connect_timeout_ms={connect_timeout_ms}"),
        lambda error: None,
    )
    admin.client = answers  # type: ignore[assignment]
    return admin


async def test_a_partition_without_a_leader_yet_is_asked_again_alone() -> None:
    answers = Answers(
        {("t", 1): KafkaError.NOT_LEADER_FOR_PARTITION, ("t", 2): KafkaError.LEADER_NOT_AVAILABLE},
        {("t", 2): KafkaError.UNKNOWN_TOPIC_OR_PART},
        {},
    )
    assert await admin_with(answers).end_offsets({"t": 3}) == {("t", 0): 7, ("t", 1): 7, ("t", 2): 7}
    assert answers.asked == [{("t", 0), ("t", 1), ("t", 2)}, {("t", 1), ("t", 2)}, {("t", 2)}]


async def test_other_errors_raise_at_once_naming_the_partition() -> None:
    answers = Answers({("t", 1): KafkaError.TOPIC_AUTHORIZATION_FAILED})
    with pytest.raises(KafkaTransportError, match=r"listing offsets of t\[1\]: .*uthoriz"):
        await admin_with(answers).end_offsets({"t": 2})
    assert len(answers.asked) == 1


async def test_a_leader_that_never_comes_raises_after_the_connect_timeout() -> None:
    moving = {("t", 0): KafkaError.NOT_LEADER_FOR_PARTITION}
    answers = Answers(*[moving] * 50)
    with pytest.raises(KafkaTransportError, match=r"listing offsets of t\[0\]"):
        await admin_with(answers, connect_timeout_ms=500).end_offsets({"t": 1})
    assert 2 <= len(answers.asked) <= 5  # every 0.2 s for 0.5 s
