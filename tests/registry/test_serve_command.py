"""`tidings registry serve` as a process, and `tidings schema check --against` a registry."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from tidings.testing import free_port
from tidings.testing.commands import CLEAN_ENV, TIDINGS, tidings
from tidings.testing.processes import stop_process


def test_serve_then_check_a_change_against_it(tmp_path: Path) -> None:
    port, ready = free_port(), tmp_path / "ready"
    server = subprocess.Popen(
        [TIDINGS, "registry", "serve", "--port", str(port), "--ready-file", str(ready),
         "--store", f"sqlite:///{tmp_path}/registry.db"],
        cwd=tmp_path, env=dict(CLEAN_ENV), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), server.stderr.read() if server.poll() is not None else "timed out"
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/config").json() == {"compatibilityLevel": "BACKWARD_TRANSITIVE"}
        old = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        registered = httpx.post(
            f"{url}/subjects/greetings-Greeted/versions",
            json={"schema": json.dumps(old), "schemaType": "JSON"},
        )
        assert registered.json() == {"id": 1}
        module = "from tidings import Event, Service\nclass Greeted(Event, topic='greetings', key='name'):\n"
        (tmp_path / "ok.py").write_text(
            module + "    name: str\nservice = Service('g', publishes=[Greeted])\n"
        )
        (tmp_path / "bad.py").write_text(
            module + "    name: int\nservice = Service('g', publishes=[Greeted])\n"
        )
        assert (
            tidings("schema", "check", "ok:service", "--against", url, cwd=tmp_path).returncode == 0
        )
        bad = tidings("schema", "check", "bad:service", "--against", url, cwd=tmp_path)
        assert bad.returncode == 1
        assert bad.stderr.startswith(
            "greetings-Greeted (BACKWARD_TRANSITIVE): name: type changed from string to integer"
        )
    finally:
        stop_process(server, grace=10)
    assert server.returncode == 0


def test_a_store_it_cannot_use_is_one_line(tmp_path: Path) -> None:
    refused = tidings("registry", "serve", "--store", "mysql://nowhere", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: 'mysql://nowhere': the registry stores in sqlite:///./registry.db or "
        "postgresql://host/db"
    )
