"""README's "Writing a service", verbatim, in an empty directory with only the package.

The blocks marked ```python file=NAME are written to an empty directory as they are;
the ```sh commands block is run line by line (``tidings`` is the installed console
script, started in that directory, so ``greet:service`` is found there); the test adds
only the broker and store URLs (files in the directory) and what makes ``tail`` stop.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tidings.testing.commands import CLEAN_ENV as ENV
from tidings.testing.commands import TIDINGS, pytest_in, running

README = Path(__file__).resolve().parents[2] / "README.md"

BLOCK = re.compile(r"^```(\w+) (file=\S+|commands)\n(.*?)^```$", re.S | re.M)


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks() -> tuple[dict[str, str], list[list[str]]]:
    """The marked blocks of the section: files by name, and the command lines (split)."""
    files: dict[str, str] = {}
    commands: list[list[str]] = []
    for _, mark, body in BLOCK.findall(section(README.read_text(), "Writing a service")):
        if mark == "commands":
            commands += [shlex.split(line) for line in body.splitlines() if line.strip()]
        else:
            files[mark.removeprefix("file=")] = body
    return files, commands


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """An empty directory holding the README's files, exactly as printed there."""
    files, _ = blocks()
    assert sorted(files) == ["greet.py", "signup.py", "test_greet.py"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_readme_test_passes(example: Path) -> None:
    done = pytest_in(example, "test_greet.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_readme_commands_run_the_service_in_an_empty_directory(example: Path) -> None:
    _, commands = blocks()
    assert [c[:2] for c in commands] == [
        ["tidings", "run"], ["tidings", "publish"], ["tidings", "tail"],
    ]  # fmt: skip
    run, publish, tail = ([TIDINGS, *c[1:]] for c in commands)
    broker = f"sqlite:///{example}/log.db"
    store = f"sqlite:///{example}/greet.db"
    ready = example / "ready"
    with running(
        [*run, "--broker", broker, "--store", store, "--ready-file", str(ready)],
        cwd=example, ready=ready,
    ) as service:  # fmt: skip
        sent = subprocess.run(
            [*publish, "--broker", broker],
            cwd=example, env=ENV, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        script = subprocess.run(
            [sys.executable, "signup.py"],
            cwd=example, env={**ENV, "TIDINGS_BROKER": broker}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert script.returncode == 0, script.stderr
        seen = subprocess.run(
            [*tail, "--broker", broker, "--json", "--max", "2", "--timeout", "60"],
            cwd=example, env=ENV, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert seen.returncode == 0, seen.stderr
    assert service.returncode == 0
    greetings = {e["subject"]: e for e in map(json.loads, seen.stdout.splitlines())}
    assert sorted(greetings) == ["Ada", "Grace"], seen.stdout
    ada = greetings["Ada"]
    assert ada["type"] == "Greeted" and ada["source"] == "greeter"
    assert ada["data"] == {"name": "Ada", "text": "Hello, Ada!", "times": 1}
    assert ada["dataschema"] == "urn:tidings:schema:Greeted:1"
    assert ada["causationid"] in sent.stdout  # caused by the request `tidings publish` sent
    assert greetings["Grace"]["data"]["text"] == "Hello, Grace!"
    assert (example / "greet.db").exists()  # the service's state, in the directory
