"""The dashboard in a real browser (headless Chromium) against a running shop.

It opens the overview and watches it update live, filters the live feed, finds an order's
timeline, opens a dead letter (a payment held for fraud review), clears the customer,
presses Replay and sees the event handled and the order complete. The held customer's id
is an HTML injection attempt: it must show as text everywhere and never run.

Screenshots go to ``$TIDINGS_SCREENSHOTS`` (default: the test's temporary directory);
with ``TIDINGS_UPDATE_DOCS=1`` the overview is also copied to ``docs/dashboard.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from observed_shop import ROOT, post_order, wait_for

from shop.demo import SERVICES, Shop
from tidings.testing import free_port
from tidings.testing.processes import start_dashboard, stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL = "apt-get update && apt-get install -y chromium"
# Payloads are untrusted: this customer id tries to run script wherever it is shown.
EVIL = "<img src=x onerror=\"window.__xss=1;document.title='pwned'\">"


def ensure_chromium() -> str:
    """Debian's Chromium, installed here if missing and we are root; else one line on how."""
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0:
            pytest.fail(f"Chromium is missing: run `sudo sh -c '{INSTALL}'`", pytrace=False)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["sh", "-c", INSTALL], check=True, env=env, capture_output=True)
    return CHROMIUM


class Running:
    def __init__(
        self,
        shop: Shop,
        board: subprocess.Popen[bytes],
        board_url: str,
        watchlist: Path,
        orders: dict[str, str],
    ) -> None:
        self.shop, self.board, self.url, self.watchlist, self.orders = (
            shop,
            board,
            board_url,
            watchlist,
            orders,
        )
        self.base = f"http://127.0.0.1:{shop.port}"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("dashboard")
    watchlist = workdir / "watchlist.txt"
    watchlist.write_text(EVIL + "\n")
    shop = Shop(
        workdir,
        f"sqlite:///{workdir}/log.db",
        f"sqlite:///{workdir}/{{service}}.db",
        free_port(),
        "dashboard",
    )
    shop.env.update(SHOP_FRAUD_HOLD_FILE=str(watchlist), SHOP_PAYMENT_FAILURE_RATE="0")
    shop.start()
    port = free_port()
    board = start_dashboard(workdir, shop.broker, port)
    try:
        shop.wait_ready()
        with httpx.Client(base_url=f"http://127.0.0.1:{shop.port}", timeout=10) as client:
            orders = {
                "completed": post_order(client, "c01", ("widget", 1)),
                "held": post_order(client, EVIL, ("gadget", 1)),
            }
            for i in range(2, 6):
                post_order(client, f"c{i:02d}", ("gizmo", 1))
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(f"{url}/api/dlq").json()["dead_letters"],
            20,
            "the held payment's dead letter",
        )
        yield Running(shop, board, url, watchlist, orders)
    finally:
        stop_process(board)
        shop.stop()


def test_the_api_refuses_foreign_hosts_and_cross_site_replays(running: Running) -> None:
    page = httpx.get(running.url + "/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp
    assert (
        httpx.get(running.url + "/api/overview", headers={"Host": "evil.example"}).status_code
        == 421
    )
    letter = httpx.get(running.url + "/api/dlq").json()["dead_letters"][0]
    replay = (
        f"{running.url}/api/dlq/{letter['group']}/{letter['partition']}/{letter['offset']}/replay"
    )
    assert httpx.post(replay).status_code == 403  # no custom header: a plain form post
    assert (
        httpx.post(
            replay, headers={"X-Tidings-Dashboard": "1", "Origin": "http://evil.example"}
        ).status_code
        == 403
    )
    assert httpx.get(running.url + "/api/dlq").json()["dead_letters"][0]["status"] == "dead"
    assert httpx.get(running.url + "/api/dlq/billing/0/99999").status_code == 404
    assert httpx.get(running.url + "/api/trace/no-such-thing").status_code == 404


def test_dashboard_in_chromium(running: Running, tmp_path: Path) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is missing: pip install playwright (no `playwright install`: "
            "the test uses Debian's chromium)",
            pytrace=False,
        )
    executable = ensure_chromium()
    shots = Path(os.environ.get("TIDINGS_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            page.goto(running.url + "/#/overview")
            walk_overview(page, expect, running, shots)
            walk_live_feed(page, expect)
            walk_timeline(page, expect, running, shots)
            walk_dead_letter_replay(page, expect, running, shots)
            # The injection attempt was shown as text, never run.
            assert page.evaluate("window.__xss") is None
            assert page.title() == "Tidings dashboard"
            assert page.locator("img").count() == 0
        finally:
            browser.close()
    assert not errors, errors
    if os.environ.get("TIDINGS_UPDATE_DOCS") == "1":
        shutil.copy(shots / "overview.png", ROOT / "docs" / "dashboard.png")
    print(f"screenshots in {shots}")

    # The CLI's tree shows the same story: dead-lettered, replayed, handled, completed.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings",
            "trace",
            running.orders["held"],
            "--broker",
            running.shop.broker,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "✗ dead-lettered by billing after 0 attempt(s)" in result.stdout
        or "✗ dead-lettered by billing after 1 attempt(s)" in result.stdout
    ), result.stdout
    assert "↻ replayed to billing (handled)" in result.stdout, result.stdout
    assert "OrderCompleted  by order" in result.stdout


def walk_overview(page: Any, expect: Any, running: Running, shots: Path) -> None:
    rows = page.get_by_test_id("service-row")
    expect(rows).to_have_count(3)
    assert [rows.nth(i).get_attribute("data-service") for i in range(3)] == sorted(SERVICES)
    expect(page.get_by_test_id("lag-row").first).to_be_visible()
    expect(page.locator("#dlq-badge")).to_have_text("1")
    before = int(page.get_by_test_id("total-events").inner_text())

    # Traffic while we watch: the page must follow it without a reload.
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=running.base, timeout=10) as client:
            i = 0
            while not stop.is_set() and i < 150:
                post_order(client, f"c{i % 7:02d}", ("gizmo", 1))
                i += 1
                time.sleep(0.04)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        expect(page.get_by_test_id("throughput")).not_to_have_text(re.compile(r"^0\.0$"))
        wait_for(
            lambda: int(page.get_by_test_id("total-events").inner_text()) > before + 20,
            15,
            "the overview to count new events",
        )
        page.wait_for_timeout(1200)
        page.screenshot(path=str(shots / "overview.png"), full_page=True)
    finally:
        stop.set()
        thread.join(30)


def walk_live_feed(page: Any, expect: Any) -> None:
    page.get_by_test_id("nav-events").click()
    expect(page.get_by_test_id("event-row").first).to_be_visible()
    page.get_by_test_id("event-filter").fill("OrderCompleted")
    rows = page.get_by_test_id("event-row")
    expect(rows.first).to_have_attribute("data-type", "OrderCompleted")
    types = {rows.nth(i).get_attribute("data-type") for i in range(min(rows.count(), 20))}
    assert types == {"OrderCompleted"}


def walk_timeline(page: Any, expect: Any, running: Running, shots: Path) -> None:
    page.get_by_test_id("nav-orders").click()
    expect(page.get_by_test_id("order-row").first).to_be_visible()
    page.get_by_test_id("search").fill(running.orders["completed"])
    # Live traffic re-renders the orders page while the user types: the text must stay.
    with httpx.Client(base_url=running.base, timeout=10) as client:
        newer = post_order(client, "c06", ("gizmo", 1))
    expect(page.locator(f'[data-testid="order-row"][data-subject="{newer}"]')).to_be_visible()
    expect(page.get_by_test_id("search")).to_have_value(running.orders["completed"])
    expect(page.get_by_test_id("search")).to_be_focused()
    page.get_by_test_id("search-button").click()
    rows = page.get_by_test_id("trace-row")
    expect(rows.last).to_have_attribute("data-type", "OrderCompleted")
    nodes = [
        (rows.nth(i).get_attribute("data-type"), rows.nth(i).get_attribute("data-depth"))
        for i in range(rows.count())
    ]
    # Billing's ledger records the charge on the customer's account (event sourcing) in
    # the same unit of work as the payment: those events are the payment's siblings.
    ledger = [n for n in nodes if n[0] in ("CreditLimitSet", "AccountCharged")]
    assert ("AccountCharged", "2") in ledger and all(depth == "2" for _, depth in ledger)
    assert [n for n in nodes if n not in ledger] == [
        ("OrderPlaced", "0"),
        ("InventoryReserved", "1"),
        ("PaymentProcessed", "2"),
        ("OrderCompleted", "3"),
    ]
    since = page.get_by_test_id("since-cause")
    assert all(
        re.fullmatch(r"\d+\.\d ms", since.nth(i).inner_text()) for i in range(1, len(nodes))
    )
    expect(page.get_by_test_id("trace-title")).to_contain_text(running.orders["completed"])
    page.screenshot(path=str(shots / "timeline.png"), full_page=True)


def walk_dead_letter_replay(page: Any, expect: Any, running: Running, shots: Path) -> None:
    page.get_by_test_id("nav-dlq").click()
    row = page.get_by_test_id("dlq-row")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-event-type", "InventoryReserved")
    row.click()
    detail = page.get_by_test_id("dlq-detail")
    expect(detail).to_be_visible()
    expect(page.get_by_test_id("dlq-error")).to_contain_text("fraud watch list")
    expect(page.get_by_test_id("dlq-error")).to_contain_text(EVIL)  # as text, not markup
    expect(page.get_by_test_id("dlq-payload")).to_contain_text(json.dumps(EVIL))  # JSON-quoted
    expect(page.get_by_test_id("dlq-status")).to_have_text("dead")
    page.screenshot(path=str(shots / "dead-letter.png"), full_page=True)

    running.watchlist.write_text("")  # the reviewer clears the customer...
    page.get_by_test_id("replay-button").click()  # ...and replays the held payment
    expect(page.get_by_test_id("dlq-status")).to_have_text("handled")
    expect(page.get_by_test_id("dlq-effects")).to_contain_text("PaymentProcessed by billing")
    expect(page.locator("#dlq-badge")).to_be_hidden()  # nothing left unresolved
    page.screenshot(path=str(shots / "dead-letter-replayed.png"), full_page=True)

    def completed() -> bool:
        order = httpx.get(f"{running.base}/orders/{running.orders['held']}").json()
        return bool(order["status"] == "COMPLETED")

    wait_for(completed, 15, "the held order to complete after the replay")
