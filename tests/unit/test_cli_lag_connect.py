"""``tidings lag --connect``: a failed connector fails the command with Connect's reason.

Connect's REST answers come from a small local HTTP server here: what is tested is how
the CLI reads and reports them (tests/cdc runs the real Connect)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from tidings.cli.main import app

STATUS = {
    "connector": {"state": "RUNNING"},
    "tasks": [
        {"state": "FAILED", "trace": 'io.debezium.DebeziumException: slot "x" is gone\n\tat ...'}
    ],
}


class _Connect(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ["legacy"] if self.path == "/connectors" else STATUS
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def connect_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Connect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_failed_connector_fails_lag_with_its_reason(tmp_path, connect_url: str) -> None:
    broker = f"sqlite:///{tmp_path}/log.db"
    result = CliRunner().invoke(app, ["lag", "--broker", broker, "--connect", connect_url])
    assert result.exit_code == 1, result.output
    assert "legacy: RUNNING, tasks: FAILED" in result.output
    assert 'failed: io.debezium.DebeziumException: slot "x" is gone' in result.output
