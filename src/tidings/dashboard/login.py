"""The dashboard's token gate: a login whenever it listens on more than loopback.

On loopback the dashboard needs no login (only the machine's own users reach it, and the
Host check stops DNS rebinding). On any other address the operator must give a token
(``--token-file`` or ``TIDINGS_DASHBOARD_TOKEN``), and ``tidings dashboard`` refuses to
start without one. With a token, every request but the login page needs either

* ``Authorization: Bearer <token>`` (scripts, curl), or
* the session cookie the login form sets: HttpOnly, SameSite=Strict, holding an HMAC of
  the token (not the token), so the page's fetches and its EventSource carry it.

Without it, the page redirects to ``/login`` and the API answers 401 with a
``WWW-Authenticate`` challenge. Tokens are compared in constant time. Hand-written: the
dashboard has one shared secret and no users, which is less than any auth library models.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import parse_qs

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

COOKIE = "tidings_dashboard"
LOGIN_PATH = "/login"
MIN_TOKEN_CHARS = 16
LOGIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tidings dashboard: log in</title>
<style>body{{font:16px system-ui;margin:4em auto;max-width:24em}}input{{font:inherit}}</style>
</head><body><h1>Tidings dashboard</h1><p>{message}</p>
<form method="post" action="/login"><label>Token <input type="password" name="token"
autocomplete="current-password" autofocus required></label> <button>Log in</button></form>
</body></html>"""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_token(token: str) -> str:
    """``token`` stripped, or ValueError when it is too short to be a secret."""
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"dashboard token: at least {MIN_TOKEN_CHARS} characters, please "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


class TokenGate:
    """Lets a request through when it carries the token; answers it otherwise."""

    def __init__(self, token: str) -> None:
        self._token = check_token(token).encode()
        self._session = hmac.new(self._token, b"tidings-dashboard-session", "sha256").hexdigest()

    def _valid(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given:
            return hmac.compare_digest(
                hashlib.sha256(given.strip().encode()).digest(),
                hashlib.sha256(self._token).digest(),
            )
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie, self._session)

    async def refusal(self, request: Request) -> Response | None:
        """None when ``request`` may go on; else the answer (the login page or a 401)."""
        if request.url.path == LOGIN_PATH:
            if request.method == "POST":
                return await self._login(request)
            return self._page("Enter the dashboard's token.", 200)
        if self._valid(request):
            return None
        if request.method == "GET" and request.url.path == "/":
            return RedirectResponse(LOGIN_PATH, status_code=303)
        return JSONResponse(
            {"error": "dashboard token required: log in at /login or send Authorization: Bearer"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="tidings-dashboard"'},
        )

    async def _login(self, request: Request) -> Response:
        form = parse_qs((await request.body())[:4096].decode(errors="replace"))
        given = (form.get("token") or [""])[0].strip().encode()
        if not hmac.compare_digest(
            hashlib.sha256(given).digest(), hashlib.sha256(self._token).digest()
        ):
            return self._page("Wrong token.", 401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE, self._session, httponly=True, samesite="strict", secure=False, path="/"
        )
        return response

    @staticmethod
    def _page(message: str, status: int) -> HTMLResponse:
        return HTMLResponse(
            _PAGE.format(message=message),
            status_code=status,
            headers={"Content-Security-Policy": LOGIN_CSP, "X-Frame-Options": "DENY"},
        )
