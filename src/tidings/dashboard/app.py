"""The dashboard's HTTP app: one static page and a small JSON + SSE API over the log.

    GET  /                               the page (index.html, vanilla JS, no build step)
    GET  /api/overview                   services, throughput, consumer lag, topics
    GET  /api/events?since=SEQ           recent events (the live feed)
    GET  /api/orders                     recent correlations (orders, in the shop)
    GET  /api/trace/{key}                causal tree of a correlation, event id or subject,
                                         with the state of the sagas of its subjects
    GET  /api/dlq                        dead letters, with their replay status
    GET  /api/dlq/{group}/{p}/{offset}   one dead letter: error, traceback, payload
    POST /api/dlq/{group}/{p}/{offset}/replay
    GET  /api/stream                     Server-Sent Events: ``events`` and ``overview``
    GET  /asyncapi.json                  the AsyncAPI 3.0 document of the services named
    GET  /asyncapi                       the same document as a page (no script)

Event payloads are untrusted input: the page builds its DOM with ``textContent`` only,
and a Content-Security-Policy allowing nothing but the page's own script and style (by
hash) backs that up. The app answers only requests addressed to a loopback host name
(against DNS rebinding), and the one request that changes anything (replay) must come
from the page itself (same Origin, a custom header that a cross-site form cannot send).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from tidings.asyncapi import asyncapi_document, parse_server
from tidings.asyncapi.page import render_page
from tidings.asyncapi.servers import PROTOCOLS
from tidings.credentials import redact
from tidings.dashboard.feed import LogFeed
from tidings.dashboard.login import TokenGate
from tidings.reliability.deadletter import DeadLetter, dlq_topic
from tidings.saga.process import Saga
from tidings.service import Service
from tidings.store import make_store
from tidings.store.base import Store, read_only
from tidings.transport import make_transport
from tidings.transport.base import Transport

INDEX = Path(__file__).with_name("index.html")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
REPLAY_HEADER = "x-tidings-dashboard"
_GROUP = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")


def _hostname(host_header: str) -> str:
    """The host name of a Host header, without the port (``[::1]:80`` -> ``[::1]``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def _csp(page: str) -> str:
    """A policy allowing exactly the page's inline script and style, by their hashes."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in bodies
        )

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def _asyncapi(broker_url: str, services: Sequence[Service]) -> dict[str, Any] | None:
    """The services' AsyncAPI document, its server the dashboard's broker if reachable."""
    if not services:
        return None
    servers = (
        [parse_server(f"broker={broker_url}")] if urlsplit(broker_url).scheme in PROTOCOLS else []
    )
    return asyncapi_document(services, servers=servers)


def create_app(
    broker_url: str,
    *,
    transport: Transport | None = None,
    interval: float = 0.5,
    allowed_hosts: frozenset[str] | None = LOOPBACK,
    services: Sequence[Service] = (),
    token: str | None = None,
    store_url: str | None = None,
) -> FastAPI:
    """The dashboard for the broker at ``broker_url`` (its transport opened on startup).

    With a ``store_url``, a timeline also shows the state of the orchestrated sagas
    (:mod:`tidings.saga`) of the ``services`` whose key is one of its subjects, read from
    each service's store (read only).

    With ``services`` it also serves their AsyncAPI document, built here once (an error
    in it fails now, not at the first request), with the broker as its one server.

    With a ``token`` every request must carry it (:mod:`tidings.dashboard.login`);
    ``allowed_hosts=None`` accepts any Host header, which only a token makes safe.
    """
    gate = TokenGate(token) if token else None
    if allowed_hosts is None and gate is None:
        raise ValueError("a dashboard that accepts any Host header needs a token")
    page = INDEX.read_text(encoding="utf-8")
    csp = _csp(page)
    shown_url = redact(broker_url)  # what the dashboard shows: never a secret
    document = _asyncapi(broker_url, services)
    spec_page = render_page(document) if document else ""
    spec_csp = _csp(spec_page)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        t = transport or make_transport(broker_url)
        await t.connect()
        feed = LogFeed(t, interval=interval)
        await feed.poll()
        state["feed"] = feed
        state["transport"] = t
        task = asyncio.create_task(feed.run(), name="dashboard-feed")
        stores: list[tuple[Saga[Any], Store]] = []
        state["sagas"] = stores
        try:
            for service in services if store_url else ():
                if service.sagas:
                    store = make_store(str(store_url), service.name)
                    await store.connect()
                    stores.extend((saga, store) for saga in service.sagas.values())
            yield
        finally:
            for store in {id(s): s for _, s in stores}.values():
                await store.close()
            state["closing"] = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if transport is None:
                await t.close()

    app = FastAPI(
        title="Tidings dashboard",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = _hostname(request.headers.get("host") or "")
        if allowed_hosts is not None and host not in allowed_hosts:
            return JSONResponse({"error": f"host {host!r} not allowed"}, status_code=421)
        if gate is not None and (refused := await gate.refusal(request)) is not None:
            refused.headers["Cache-Control"] = "no-store"
            return refused
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
                return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
            if request.headers.get(REPLAY_HEADER) != "1":
                return JSONResponse({"error": f"missing {REPLAY_HEADER} header"}, status_code=403)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def feed() -> LogFeed:
        return state["feed"]  # type: ignore[no-any-return]

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(
            page, headers={"Content-Security-Policy": csp, "X-Frame-Options": "DENY"}
        )

    def asyncapi_or_404() -> dict[str, Any]:
        if document is None:
            raise HTTPException(
                404,
                "no services named: start the dashboard with --service MODULE:service "
                "(repeatable) to serve their AsyncAPI document",
            )
        return document

    @app.get("/asyncapi.json")
    async def asyncapi_json() -> dict[str, Any]:
        return asyncapi_or_404()

    @app.get("/asyncapi", response_class=HTMLResponse)
    async def asyncapi_page() -> HTMLResponse:
        asyncapi_or_404()
        return HTMLResponse(
            spec_page, headers={"Content-Security-Policy": spec_csp, "X-Frame-Options": "DENY"}
        )

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "broker": shown_url, "polled_at": feed().polled_at}

    @app.get("/api/overview")
    async def overview() -> dict[str, Any]:
        return {"broker": shown_url, **feed().overview()}

    @app.get("/api/events")
    async def events(
        since: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=500)
    ) -> dict[str, Any]:
        f = feed()
        return {"seq": f.seq, "events": f.events_since(since, limit)}

    @app.get("/api/orders")
    async def orders(limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        return {"orders": feed().orders(limit)}

    @app.get("/api/trace/{key}")
    async def trace(key: str) -> dict[str, Any]:
        result = await feed().trace(key)
        if not result.roots:
            raise HTTPException(404, f"no events with correlation id, id or subject {key!r}")
        found = result.to_dict()
        found["sagas"] = await _sagas(state["sagas"], _subjects(found["tree"]))
        return found

    @app.get("/api/dlq")
    async def dead_letters() -> dict[str, Any]:
        return {"dead_letters": feed().dead_letter_summaries()}

    async def read_letter(group: str, partition: int, offset: int) -> DeadLetter:
        if not _GROUP.match(group):
            raise HTTPException(404, "no such consumer group")
        t: Transport = state["transport"]
        topics = {i.name: i for i in await t.topics()}
        info = topics.get(dlq_topic(group))
        if (
            info is None
            or partition not in info.end_offsets
            or not 0 <= offset < info.end_offsets[partition]
        ):
            raise HTTPException(404, f"no dead letter {group}/{partition}@{offset}")
        records = await t.read(dlq_topic(group), partition, offset, 1)
        if not records or records[0].offset != offset:
            raise HTTPException(
                404, f"dead letter {group}/{partition}@{offset} is gone (retention)"
            )
        return DeadLetter.from_record(records[0])

    @app.get("/api/dlq/{group}/{partition}/{offset}")
    async def dead_letter(group: str, partition: int, offset: int) -> dict[str, Any]:
        letter = await read_letter(group, partition, offset)
        fact = feed().find_dead_letter(group, partition, offset)
        payload = letter.record.value.decode(errors="replace")
        with contextlib.suppress(ValueError):
            payload = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
        return {
            "group": group,
            "partition": partition,
            "offset": offset,
            "event_type": letter.event_type,
            "event_id": letter.event_id,
            "reason": letter.reason,
            "error": letter.error,
            "traceback": letter.traceback,
            "attempts": letter.attempts,
            "failed_at": letter.failed_at,
            "from": f"{letter.topic}/{letter.partition}@{letter.offset}",
            "headers": letter.original_headers,
            "payload": payload,
            "subject": letter.record.key,
            "correlation_id": letter.original_headers.get("ce_correlationid"),
            **(
                feed().dead_letter_state(fact)
                if fact
                else {"status": "dead", "replays": 0, "effects": []}
            ),
        }

    @app.post("/api/dlq/{group}/{partition}/{offset}/replay")
    async def replay(group: str, partition: int, offset: int) -> dict[str, Any]:
        letter = await read_letter(group, partition, offset)
        t: Transport = state["transport"]
        await t.publish([letter.replay_record()])
        return {"status": "replayed", "event_id": letter.event_id, "group": group}

    @app.get("/api/stream")
    async def stream(request: Request, since: int = Query(0, ge=0)) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            f = feed()
            seq = since or f.seq
            yield "retry: 2000\n\n"
            while not state.get("closing") and not await request.is_disconnected():
                new = f.events_since(seq)
                if new:
                    seq = new[-1]["seq"]
                    yield f"event: events\ndata: {json.dumps(new, default=str)}\n\n"
                yield f"event: overview\ndata: {json.dumps(f.overview(), default=str)}\n\n"
                await f.wait(1.0)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    return app


def _subjects(tree: list[dict[str, Any]], limit: int = 5) -> list[str]:
    """The first ``limit`` distinct subjects of a trace's nodes, depth first."""
    found: list[str] = []
    stack = list(reversed(tree))
    while stack and len(found) < limit:
        node = stack.pop()
        subject = node.get("subject")
        if subject and subject not in found:
            found.append(subject)
        stack.extend(reversed(node.get("children", [])))
    return found


async def _sagas(stores: list[tuple[Saga[Any], Store]], keys: list[str]) -> list[dict[str, Any]]:
    """The state (without history) of each saga instance named by one of ``keys``."""
    shown: list[dict[str, Any]] = []
    for saga, store in stores:
        async with read_only(store, saga.service.name) as uow:
            for key in keys:
                doc = await uow.get(saga.collection.name, key)
                if doc is not None:
                    instance = saga.state.model_validate(doc.data)
                    shown.append({"saga": saga.name, **instance.summary()})
    return shown
