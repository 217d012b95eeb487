"""The dashboard off loopback: refused without a token, gated by one with it (real HTTP)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidings.testing import free_port
from tidings.testing.processes import stop_process


def _dashboard(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "tidings", "dashboard", *args]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_DASHBOARD")}


def test_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        _dashboard("--host", "0.0.0.0", "--broker", f"sqlite:///{tmp_path}/log.db"),
        capture_output=True, text=True, timeout=60, env=_clean_env(),
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "refuses to listen on 0.0.0.0 without a token" in lines[0]
    assert not (tmp_path / "log.db").exists()  # refused before touching the broker


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    """A dashboard on 0.0.0.0 with a token file; a client on its loopback address."""
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token + "\n")
    port = free_port()
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        _dashboard(
            "--host", "0.0.0.0", "--port", str(port), "--token-file", str(tmp_path / "token"),
            "--broker", f"sqlite:///{tmp_path}/log.db", "--ready-file", str(ready),
        ),
        env=_clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "dashboard did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, token
    finally:
        stop_process(proc)


def test_token_gates_every_request(gated: tuple[httpx.Client, str]) -> None:
    client, token = gated
    refused = client.get("/api/overview")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/overview", headers={"Authorization": "Bearer wrong"}).status_code == 401
    page = client.get("/")
    assert page.status_code == 303
    assert page.headers["location"] == "/login"
    assert "server" not in page.headers
    assert (
        client.get("/api/overview", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    # The login form: a wrong token sets nothing; the right one a cookie the page then uses.
    wrong = client.post("/login", data={"token": "nope"})
    assert wrong.status_code == 401
    assert "tidings_dashboard" not in client.cookies
    login = client.post("/login", data={"token": token})
    assert login.status_code == 303
    assert "httponly" in login.headers["set-cookie"].lower()
    assert "samesite=strict" in login.headers["set-cookie"].lower()
    assert token not in login.headers["set-cookie"]
    assert client.get("/").status_code == 200
    assert client.get("/api/overview").status_code == 200
