"""`tidings publish` and `tidings tail` as real processes on the SQLite log, Kafka and NATS."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tidings.testing.commands import CLEAN_ENV as ENV
from tidings.testing.commands import TIDINGS, tidings
from tidings.testing.servers import require
from tidings.transport import OutgoingRecord, make_transport


@pytest.fixture
def topic() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def publish(broker: str, topic: str, *args: str) -> str:
    """Publish with the CLI; the new event's id."""
    done = tidings("publish", topic, "--broker", broker, *args)
    assert done.returncode == 0, done.stderr
    found = re.search(r"published \S+ (\S+) to ", done.stdout)
    assert found, done.stdout
    return found.group(1)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def test_published_events_are_tailed_with_every_attribute(broker: str, topic: str) -> None:
    first = publish(
        broker, topic, "--type", "Greeted", "--key", "ada", "--data", '{"name": "Ada", "n": 1}',
        "--source", "suite",
    )  # fmt: skip
    second = publish(broker, topic, "--type", "Waved", "--data", '{"at": "door"}')
    as_json = tidings("tail", topic, "--from-beginning", "--json", "--max", "2", "--timeout", "30",
                      "--broker", broker)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    events = {e["id"]: e for e in map(json.loads, as_json.stdout.splitlines())}
    assert set(events) == {first, second}
    greeted, waved = events[first], events[second]
    assert greeted["type"] == "Greeted" and greeted["subject"] == "ada"
    assert greeted["data"] == {"name": "Ada", "n": 1}
    assert greeted["source"] == "suite" and waved["source"] == "tidings-cli"
    assert greeted["specversion"] == "1.0" and greeted["correlationid"] == first
    assert "subject" not in waved  # published without --key
    as_text = tidings("tail", topic, "--from-beginning", "--max", "2", "--timeout", "30",
                      "--broker", broker)  # fmt: skip
    assert as_text.returncode == 0, as_text.stderr
    lines = sorted(as_text.stdout.splitlines(), key=lambda line: first in line, reverse=True)
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z  Greeted  ada  {first}  "
        r'\{"name":"Ada","n":1\}',
        lines[0],
    ), lines
    assert lines[1].endswith(f"  Waved  -  {second}  " + '{"at":"door"}'), lines


def test_tail_without_flags_shows_only_new_events(broker: str, topic: str) -> None:
    publish(broker, topic, "--type", "Old", "--key", "k", "--data", "{}")
    tail = subprocess.Popen(
        [TIDINGS, "tail", topic, "--json", "--max", "1", "--timeout", "60", "--broker", broker],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert tail.stderr is not None
        started = tail.stderr.readline()  # printed once its start offsets are fixed
        assert started.startswith(f"tailing {topic} (new events)"), started
        new = publish(broker, topic, "--type", "New", "--key", "k", "--data", '{"x": 1}')
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
        tail.wait()
    assert tail.returncode == 0, err
    [line] = out.splitlines()
    assert json.loads(line)["id"] == new


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("sqlite:///{tmp}/log.db", id="sqlite"),  # the log's offset for a time
        pytest.param("nats://127.0.0.1:4222", id="nats"),  # read all, filter by timestamp
    ],
)
def test_tail_since_starts_that_long_ago(template: str, tmp_path: Path, topic: str) -> None:
    require(template)
    broker = template.format(tmp=tmp_path)
    publish(broker, topic, "--type", "Before", "--key", "k", "--data", "{}")
    time.sleep(4)
    middle = time.time()
    time.sleep(4)
    after = publish(broker, topic, "--type", "After", "--key", "k", "--data", "{}")
    # Measured from the middle, not a fixed "4s": on a loaded machine the publish and the
    # tail's own start can each take seconds, which a fixed window would count against it.
    since = f"{int(time.time() - middle)}s"
    done = tidings("tail", topic, "--since", since, "--json", "--timeout", "3", "--broker", broker)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [after]


def test_tail_shows_records_that_do_not_decode(tmp_path: Path, topic: str) -> None:
    broker = f"sqlite:///{tmp_path}/log.db"

    async def put_garbage() -> None:
        transport = make_transport(broker)
        await transport.connect()
        await transport.publish([OutgoingRecord(topic, b"\xff not json", "k")])
        await transport.close()

    asyncio.run(put_garbage())
    good = publish(broker, topic, "--type", "Fine", "--key", "k", "--data", "{}")
    text = tidings("tail", topic, "--from-beginning", "--max", "2", "--timeout", "30",
                   "--broker", broker)  # fmt: skip
    assert text.returncode == 0, text.stderr
    bad_line, good_line = text.stdout.splitlines()  # same key: same partition, in order
    assert "(undecodable)  k  " in bad_line and "not valid JSON" in bad_line
    assert f"Fine  k  {good}" in good_line
    as_json = tidings("tail", topic, "--from-beginning", "--json", "--max", "2",
                      "--timeout", "30", "--broker", broker)  # fmt: skip
    bad, fine = map(json.loads, as_json.stdout.splitlines())
    assert "not valid JSON" in bad["undecodable"] and bad["key"] == "k"
    assert bad["value"].endswith(" not json") and fine["id"] == good


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["t", "--type", "T", "--data", '{"a": '], "--data is not valid JSON"),
        (["t", "--type", "T", "--data", "[1, 2]"], "--data must be a JSON object"),
        (["t", "--data", "{}"], "missing --type"),
        (["--type", "T"], "missing TOPIC, --data"),
        (
            ["t", "--type", "T", "--data", "{}", "--broker", "nats://127.0.0.1:1"],
            "nats://127.0.0.1:1",
        ),
        (["t", "--type", "T", "--data", "{}", "--broker", "rabbit://x"], "is not a broker URL"),
    ],
)
def test_publish_errors_are_one_line(args: list[str], expected: str) -> None:
    assert expected in one_error_line(tidings("publish", *args))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["t", "--since", "5 minutes"], "expected a duration such as 30s"),
        (["t", "--since", "5m", "--from-beginning"], "exclude each other"),
        (["t", "--broker", "kafka://127.0.0.1:1"], "kafka://127.0.0.1:1"),
    ],
)
def test_tail_errors_are_one_line(args: list[str], expected: str) -> None:
    assert expected in one_error_line(tidings("tail", *args))
