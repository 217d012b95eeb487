"""The guard in front of a service's HTTP app: headers, authentication, rate limits, CORS.

    protect = guard(GuardConfig(api_keys=Path("order.keys"), rate_limit="20/second"))
    app = protect(service.http_app)

What it does to every HTTP request, in order:

1. **Security headers** on every response, refusals included: ``X-Content-Type-Options:
   nosniff``, a Content-Security-Policy for a JSON API (nothing may load, nothing may frame
   it), ``Referrer-Policy: no-referrer``, ``Cache-Control: no-store`` when the app set
   none. The interactive ``/docs`` page loads scripts, so it gets a policy of its own.
2. **Authentication**, when API keys or a JWT issuer are configured: an ``X-API-Key``
   header (:mod:`~tidings.apiguard.keys`) or ``Authorization: Bearer <JWT>``
   (:mod:`~tidings.apiguard.bearer`). Missing or wrong: 401 with a ``WWW-Authenticate``
   challenge per accepted scheme and one line saying what failed. ``open_paths`` (the
   health check) need none. Nothing configured: every request is let through, as before.
3. **Rate limits**, when configured (:mod:`~tidings.apiguard.ratelimit`): per client id
   once authenticated, else per peer address (so unauthenticated key guessing is limited
   too). Over the limit: 429 with ``Retry-After``.
4. **CORS** only for the origins listed (Starlette's middleware); none by default, so a
   browser page of another origin cannot read the API.

The authenticated client id is put in the ASGI scope under :data:`CLIENT_KEY` for the app.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.apiguard.bearer import BearerVerifier, InvalidToken
from tidings.apiguard.keys import HEADER as KEY_HEADER
from tidings.apiguard.keys import ApiKeys
from tidings.apiguard.ratelimit import RateLimiter

CLIENT_KEY = "tidings.client"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's /docs page loads Swagger UI from a CDN and runs an inline script.
DOCS_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")
REALM = "tidings"


@dataclass(frozen=True)
class GuardConfig:
    """What the operator turned on; the default turns on only the headers."""

    api_keys: Path | None = None
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_key_file: Path | None = None
    rate_limit: str = ""
    cors_origins: Sequence[str] = ()
    open_paths: Sequence[str] = field(default=("/health",))

    @property
    def authenticates(self) -> bool:
        return self.api_keys is not None or self.jwt_key_file is not None

    def check(self) -> None:
        """Raise ValueError (one line) when the JWT options are given only in part."""
        jwt_parts = {
            "--jwt-issuer": self.jwt_issuer,
            "--jwt-audience": self.jwt_audience,
            "--jwt-key-file": self.jwt_key_file,
        }
        given = [name for name, value in jwt_parts.items() if value]
        if given and len(given) < len(jwt_parts):
            missing = [name for name in jwt_parts if name not in given]
            raise ValueError(
                f"JWT checking needs {', '.join(missing)} too (got {', '.join(given)})"
            )


def guard(config: GuardConfig | None = None) -> Callable[[ASGIApp], ASGIApp]:
    """A function putting an app behind the guard ``config`` describes.

    Key files are read now, so a bad one fails here (ValueError naming file and line),
    before a service connects to anything.
    """
    config = config or GuardConfig()
    config.check()
    keys = ApiKeys.load(config.api_keys) if config.api_keys else None
    bearer = (
        BearerVerifier.from_file(config.jwt_issuer, config.jwt_audience, config.jwt_key_file)
        if config.jwt_key_file
        else None
    )
    limiter = RateLimiter(config.rate_limit) if config.rate_limit else None

    def protect(app: ASGIApp) -> ASGIApp:
        if config.cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["authorization", "content-type", KEY_HEADER],
            )
        return ApiGuard(
            app, keys=keys, bearer=bearer, limiter=limiter, open_paths=config.open_paths
        )

    return protect


class ApiGuard:
    """ASGI middleware; build it with :func:`guard`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeys | None = None,
        bearer: BearerVerifier | None = None,
        limiter: RateLimiter | None = None,
        open_paths: Sequence[str] = ("/health",),
    ) -> None:
        self.app = app
        self.keys = keys
        self.bearer = bearer
        self.limiter = limiter
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        csp = DOCS_CSP if path in DOCS_PATHS else API_CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                present = {k.lower() for k, _ in headers}
                for name, value in (
                    (b"x-content-type-options", b"nosniff"),
                    (b"content-security-policy", csp.encode()),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store"),
                ):
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client: str | None = None
        refusal: str | None = None
        if (self.keys or self.bearer) and path not in self.open_paths:
            client, refusal = self._authenticate(headers)
        if self.limiter is not None:
            peer = scope.get("client")
            who = f"client:{client}" if client else f"addr:{peer[0] if peer else '?'}"
            verdict = await self.limiter.hit(who)
            if not verdict.allowed:
                await _answer(
                    with_headers,
                    429,
                    f"too many requests: limit {self.limiter.text}; retry in {verdict.retry_after}s",
                    [(b"retry-after", str(verdict.retry_after).encode())],
                )
                return
        if refusal is not None:
            await _answer(with_headers, 401, refusal, self._challenges(headers))
            return
        if client is not None:
            scope = {**scope, CLIENT_KEY: client}
        await self.app(scope, receive, with_headers)

    def _authenticate(self, headers: dict[str, str]) -> tuple[str | None, str | None]:
        """(client id, None) or (None, why it is refused)."""
        key = headers.get(KEY_HEADER)
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if key is not None and self.keys is not None:
            client = self.keys.client(key.strip())
            return (client, None) if client else (None, "API key refused: unknown key")
        if authorization and self.bearer is not None:
            if scheme.lower() != "bearer" or not token.strip():
                return None, "Authorization header: expected 'Bearer <token>'"
            try:
                return self.bearer.subject(token.strip()), None
            except InvalidToken as exc:
                return None, str(exc)
        accepted = []
        if self.keys is not None:
            accepted.append(f"an {KEY_HEADER.title()} header")
        if self.bearer is not None:
            accepted.append("an Authorization: Bearer <JWT> header")
        return None, f"authentication required: send {' or '.join(accepted)}"

    def _challenges(self, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        challenges = []
        if self.bearer is not None:
            error = ', error="invalid_token"' if "authorization" in headers else ""
            challenges.append(f'Bearer realm="{REALM}"{error}')
        if self.keys is not None:
            challenges.append(f'ApiKey realm="{REALM}", header="{KEY_HEADER.title()}"')
        return [(b"www-authenticate", c.encode()) for c in challenges]


async def _answer(send: Send, status: int, error: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": error}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
