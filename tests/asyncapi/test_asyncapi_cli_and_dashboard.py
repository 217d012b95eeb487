"""`tidings asyncapi` and the dashboard's /asyncapi pages, as real processes over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft7Validator

from shop import billing, inventory, order
from tidings.asyncapi import asyncapi_document, parse_server
from tidings.testing import free_port
from tidings.testing.commands import tidings
from tidings.testing.processes import start_dashboard, stop_process

TARGETS = ["shop.order:service", "shop.inventory:service", "shop.billing:service"]


def test_the_command_writes_yaml_and_json_of_one_document(
    tmp_path: Path, asyncapi_schema: Draft7Validator
) -> None:
    server = ["--server", "prod=kafka://k1:9092"]
    as_yaml = tidings("asyncapi", *TARGETS, *server, cwd=tmp_path)
    assert as_yaml.returncode == 0, as_yaml.stderr
    out = tmp_path / "shop.json"
    as_json = tidings("asyncapi", *TARGETS, *server, "--format", "json", "-o", str(out))
    assert as_json.returncode == 0, as_json.stderr
    # The order service receives the order's end on shop.orders in either saga mode (the
    # mode is each order's, not the process's); inventory reads shop.stock (StockAdjusted).
    assert "9 channel(s), 15 operation(s), 22 message(s)" in as_json.stdout
    document = json.loads(out.read_text())
    assert yaml.safe_load(as_yaml.stdout) == document
    assert asyncapi_schema.is_valid(document)
    assert document["servers"]["prod"] == {**document["servers"]["prod"], "protocol": "kafka"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nope.module:service"], "cannot load nope.module:service: No module named 'nope'"),
        (["shop.events:ORDERS"], "shop.events:ORDERS is a str, not a tidings.Service"),
        ([*TARGETS[:1], "--format", "xml"], "--format 'xml': yaml or json"),
        ([*TARGETS[:1], "--server", "x=memory://"], "memory:// is in-process only"),
        ([*TARGETS[:1], "--content-mode", "both"], "--content-mode 'both': binary or structured"),
    ],
)
def test_bad_input_is_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    done = tidings("asyncapi", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A `tidings dashboard --service ...` process on a fresh SQLite log: (url, broker)."""
    workdir = tmp_path_factory.mktemp("asyncapi-dashboard")
    broker = f"sqlite:///{workdir}/log.db"
    port = free_port()
    proc = start_dashboard(workdir, broker, port, services=TARGETS)
    try:
        yield f"http://127.0.0.1:{port}", broker
    finally:
        stop_process(proc)


def test_the_dashboard_serves_the_document(board: tuple[str, str]) -> None:
    url, broker = board
    response = httpx.get(url + "/asyncapi.json", timeout=10)
    assert response.status_code == 200
    expected = asyncapi_document(
        [order.service, inventory.service, billing.service],
        servers=[parse_server(f"broker={broker}")],
    )
    assert response.json() == expected


def test_the_dashboard_page_shows_the_same_document(board: tuple[str, str]) -> None:
    url, _ = board
    response = httpx.get(url + "/asyncapi", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'sha256-" in csp
    page = response.text
    document: dict[str, Any] = httpx.get(url + "/asyncapi.json", timeout=10).json()
    for channel in document["channels"].values():
        assert f"<code>{channel['address']}</code>" in page
    for service in ("order", "inventory", "billing"):
        assert f'<h3 id="service-{service}">{service}</h3>' in page
    for message in document["components"]["messages"]:
        assert f'<h3 id="message-{message}">{message}</h3>' in page
    # the payload fields table, nested model flattened, with required and constraints
    assert "<tr><td>lines[].quantity</td><td>integer</td><td>yes</td>" in page
    assert "exclusiveMinimum 0, maximum 1000" in page
    assert "<code>ce_type</code> = <code>OrderPlaced</code>" in page
    assert "<code>ce_dataschema</code> = <code>urn:tidings:schema:OrderPlaced:1</code>" in page
    assert "<code>ce_id</code> <code>ce_source</code>" in page  # the headers, required bare
    assert "<code>ce_traceparent?</code>" in page
    assert "<script" not in page
    assert 'href="/asyncapi"' in httpx.get(url + "/", timeout=10).text  # linked from the board


def test_without_services_the_pages_say_how(tmp_path: Path) -> None:
    port = free_port()
    proc = start_dashboard(tmp_path, f"sqlite:///{tmp_path}/log.db", port)
    try:
        for path in ("/asyncapi.json", "/asyncapi"):
            response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert response.status_code == 404
            assert "--service MODULE:service" in response.json()["detail"]
    finally:
        stop_process(proc)
    bad = tidings("dashboard", "--service", "nope:service", "--port", str(free_port()))
    assert bad.returncode == 2 and "cannot load nope:service" in bad.stderr
