"""`tidings new NAME`: the files it writes run, as a test and as a service, in real processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidings.testing.commands import TIDINGS, pytest_in, running, tidings


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[Path]:
    """An empty directory where `tidings new hello` has run."""
    made = tidings("new", "hello", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.py", "test_hello.py"]
    yield tmp_path


def test_the_generated_test_passes_under_pytest(hello: Path) -> None:
    done = pytest_in(hello, "test_hello.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout


def test_the_generated_service_runs_and_publishes(hello: Path) -> None:
    broker = f"sqlite:///{hello}/log.db"
    ready = hello / "ready"
    run = [TIDINGS, "run", "hello:service", "--broker", broker,
           "--store", f"sqlite:///{hello}/{{service}}.db", "--ready-file", str(ready)]  # fmt: skip
    with running(run, cwd=hello, ready=ready) as service:
        sent = tidings("publish", "hello.requests", "--type", "HelloRequested", "--key", "k1",
                       "--data", '{"id": "k1", "text": "hi"}', "--broker", broker, cwd=hello)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        tail = tidings("tail", "hello.done", "--from-beginning", "--json", "--max", "1",
                       "--timeout", "60", "--broker", broker, cwd=hello)  # fmt: skip
        assert tail.returncode == 0, tail.stderr
        [line] = tail.stdout.splitlines()
        done = json.loads(line)
        assert done["type"] == "HelloDone" and done["source"] == "hello"
        assert done["data"] == {"id": "k1", "text": "HI", "times": 1}
        assert done["causationid"] in sent.stdout  # caused by the request we published
    assert service.returncode == 0


def test_new_never_overwrites(hello: Path) -> None:
    before = (hello / "hello.py").read_text()
    line = one_error_line(tidings("new", "hello", cwd=hello))
    assert "already exist" in line and "hello.py" in line
    assert (hello / "hello.py").read_text() == before
    (hello / "test_other.py").write_text("# mine\n")
    assert "test_other.py" in one_error_line(tidings("new", "other", cwd=hello))
    assert not (hello / "other.py").exists()  # nothing written when one file is in the way


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Hello-World", "cannot name a service module"),
        ("class", "cannot name"),
        ("json", "would hide"),
    ],
)
def test_new_refuses_names_that_cannot_work(tmp_path: Path, name: str, expected: str) -> None:
    assert expected in one_error_line(tidings("new", name, cwd=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_new_writes_into_dir(tmp_path: Path) -> None:
    made = tidings("new", "orders", "--dir", "svc/orders", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (tmp_path / "svc/orders").iterdir()) == [
        "orders.py",
        "test_orders.py",
    ]
