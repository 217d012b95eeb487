"""A service's HTTP app: a unit of work per request, with no global state.

    from fastapi import FastAPI
    from tidings.http import UnitOfWork

    app = FastAPI()

    @app.post("/orders")
    async def create(command: PlaceOrder, ctx: UnitOfWork) -> dict:
        ctx.publish(OrderPlaced(...))          # committed with the state when the request ends
        ...

    service.http(app)

Whatever serves the app (``tidings run``, :class:`tidings.testing.TestApp`) wraps it
with :func:`with_units`, which puts that runtime's unit-of-work factory into the ASGI
scope of every request; the :data:`UnitOfWork` dependency opens one from there. The
same app object can so be served by several runtimes in one process, each with its own
store, and nothing is bound to the module-level ``Service``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.service import Context

SCOPE_KEY = "tidings.unit_of_work"
UnitFactory = Callable[[], contextlib.AbstractAsyncContextManager[Context]]


def with_units(app: Any, unit_of_work: UnitFactory) -> Any:
    """``app`` as an ASGI app whose requests can open units of work from ``unit_of_work``."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, SCOPE_KEY: unit_of_work}
        await app(scope, receive, send)

    return wrapped


async def unit_of_work(request: Request) -> AsyncIterator[Context]:
    """FastAPI dependency: a unit of work that commits when the endpoint returns."""
    factory: UnitFactory | None = request.scope.get(SCOPE_KEY)
    if factory is None:
        raise RuntimeError(
            "no unit of work: serve this app with its service (tidings run, or "
            "tidings.testing.TestApp), which passes one to every request"
        )
    async with factory() as ctx:
        yield ctx


# scope="function": the unit of work commits when the endpoint returns, before the response
# is sent, so a client that got 2xx can read what it wrote, and a failed commit is a 5xx.
UnitOfWork = Annotated[Context, Depends(unit_of_work, scope="function")]


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, chunked or not.

    Hand-written because neither Starlette nor uvicorn limits request bodies.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        # Read the whole body first (it is small by definition) so that an oversized
        # chunked body is refused here, before the app starts parsing it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"error": f"request body is larger than {self.limit} bytes"}, status_code=413
        )
        await response(scope, receive, send)


def readable_validation_errors(app: FastAPI) -> None:
    """Answer a request that fails validation with 422 and one line saying what and where."""

    @app.exception_handler(RequestValidationError)
    async def readable_422(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
            problems.append(f"{where}: {err['msg']}")
        return JSONResponse({"error": "; ".join(problems), "detail": exc.errors()}, status_code=422)
