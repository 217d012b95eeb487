"""API keys and bearer JWTs on the order API, over real HTTP to a `tidings run` process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from joserfc import jwk, jwt
from tests.apiguard.conftest import OrderApi

from tidings.apiguard import key_line, new_key

ISSUER = "https://login.example.test/"
AUDIENCE = "order-api"
ORDER = {"customer_id": "c1", "lines": [{"sku": "widget", "quantity": 1}]}


@pytest.fixture(scope="module")
def signing_key() -> jwk.RSAKey:
    return jwk.RSAKey.generate_key(2048)


@pytest.fixture(scope="module")
def guarded(
    order_api: OrderApi, tmp_path_factory: pytest.TempPathFactory, signing_key: jwk.RSAKey
) -> tuple[httpx.Client, str]:
    """The order API with one API key (for client ``checkout``) and JWTs from ISSUER."""
    tmp_path = tmp_path_factory.mktemp("keys")
    key = new_key()
    keys = tmp_path / "order.keys"
    keys.write_text(f"# clients of the order API\n{key_line('checkout', key)}\n")
    public = tmp_path / "issuer.pem"
    public.write_bytes(signing_key.as_pem(private=False))
    client = order_api(
        {
            "TIDINGS_API_KEYS": str(keys),
            "TIDINGS_JWT_ISSUER": ISSUER,
            "TIDINGS_JWT_AUDIENCE": AUDIENCE,
            "TIDINGS_JWT_KEY_FILE": str(public),
        }
    )
    return client, key


def token(key: jwk.RSAKey, **claims: object) -> str:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mobile-app", "exp": int(time.time()) + 300}
    body.update(claims)
    return jwt.encode({"alg": "RS256"}, {k: v for k, v in body.items() if v is not None}, key)


def test_no_credentials_gets_401_with_challenges(guarded: tuple[httpx.Client, str]) -> None:
    api, _ = guarded
    response = api.get("/orders")
    assert response.status_code == 401
    assert "authentication required" in response.json()["error"]
    challenges = response.headers.get_list("www-authenticate")
    assert any(c.startswith('Bearer realm="tidings"') for c in challenges)
    assert any(c.startswith("ApiKey") for c in challenges)
    assert api.post("/orders", json=ORDER).status_code == 401
    assert api.get("/health").status_code == 200  # probes need no key


def test_api_keys(guarded: tuple[httpx.Client, str]) -> None:
    api, key = guarded
    wrong = api.get("/orders", headers={"X-API-Key": new_key()})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "API key refused: unknown key"
    assert wrong.headers["www-authenticate"]
    placed = api.post("/orders", json=ORDER, headers={"X-API-Key": key})
    assert placed.status_code == 202
    order_id = placed.json()["order_id"]
    read = api.get(f"/orders/{order_id}", headers={"X-API-Key": key})
    assert read.status_code == 200
    assert read.json()["status"] == "PLACED"


def test_bearer_jwts(guarded: tuple[httpx.Client, str], signing_key: jwk.RSAKey) -> None:
    api, _ = guarded

    def get(tok: str) -> httpx.Response:
        return api.get("/orders", headers={"Authorization": f"Bearer {tok}"})

    assert get(token(signing_key)).status_code == 200
    refused = {
        "expired": (token(signing_key, exp=int(time.time()) - 600), "expired"),
        "wrong audience": (token(signing_key, aud="billing-api"), "'aud'"),
        "wrong issuer": (token(signing_key, iss="https://evil.test/"), "'iss'"),
        "no subject": (token(signing_key, sub=None), "'sub'"),
        "another key": (token(jwk.RSAKey.generate_key(2048)), "signature"),
        "garbage": ("not.a.jwt", "refused"),
        "alg none": ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "none"),
    }
    for case, (tok, why) in refused.items():
        response = get(tok)
        assert response.status_code == 401, case
        assert why in response.json()["error"], (case, response.json())
        assert 'error="invalid_token"' in response.headers["www-authenticate"], case
    basic = api.get("/orders", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    assert "expected 'Bearer <token>'" in basic.json()["error"]


def test_security_headers_on_every_answer(guarded: tuple[httpx.Client, str]) -> None:
    api, key = guarded
    for response in (api.get("/orders", headers={"X-API-Key": key}), api.get("/orders")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "server" not in response.headers
        assert "access-control-allow-origin" not in response.headers  # no CORS by default
    preflight = api.options(
        "/orders",
        headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_body_and_field_limits_still_hold(guarded: tuple[httpx.Client, str]) -> None:
    api, key = guarded
    big = api.post(
        "/orders",
        content=b"x" * (65 * 1024),
        headers={"X-API-Key": key, "content-type": "application/json"},
    )
    assert big.status_code == 413
    bad = api.post("/orders", json={"customer_id": "c1", "lines": []}, headers={"X-API-Key": key})
    assert bad.status_code == 422
    assert "lines: List should have at least 1 item" in bad.json()["error"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TIDINGS_API_KEYS": "{tmp}/missing.keys"},
            "API keys file {tmp}/missing.keys: No such file",
        ),
        (
            {"TIDINGS_API_KEYS": "{tmp}/plain.keys"},
            "line 1: client 'checkout' needs sha256:<64 hex digits>",
        ),
        ({"TIDINGS_JWT_ISSUER": ISSUER}, "JWT checking needs --jwt-audience, --jwt-key-file too"),
        ({"TIDINGS_RATE_LIMIT": "lots"}, "rate limit 'lots': expected N/period"),
    ],
)
def test_bad_configuration_fails_the_start_in_one_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "plain.keys").write_text("checkout:hunter2\n")
    environment = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "run", "shop.order:service", "--http", "127.0.0.1:0",
         "--broker", f"sqlite:///{tmp_path}/log.db", "--store", f"sqlite:///{tmp_path}/{{service}}.db"],
        capture_output=True, text=True, timeout=60, env={**_env(), **environment},
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert message.format(tmp=tmp_path) in errors[0]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("TIDINGS_JWT", "TIDINGS_API"))}
