"""The store on the secured PostgreSQL (scripts/services up postgres-secure): TLS verified
against the throwaway CA and a SCRAM password from libpq's PGPASSWORD; a connection
without TLS, or with a wrong password, is refused."""

from __future__ import annotations

import psycopg
import pytest

from tidings.store import make_store
from tidings.testing.postgres import fresh_schema
from tidings.testing.secure import CA, SECURE_DIR
from tidings.testing.servers import require, skip_or_fail

BASE = "postgresql://postgres@127.0.0.1:5433/tidings"
URL = f"{BASE}?sslmode=verify-full&sslrootcert={CA}"


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    require(BASE)
    path = SECURE_DIR / "postgres-admin.pw"
    if not path.is_file():
        skip_or_fail(
            f"postgres-secure: no {path}; start it with `scripts/services up postgres-secure`"
        )
    secret = path.read_text().strip()
    monkeypatch.setenv("PGPASSWORD", secret)
    return secret


async def test_the_store_connects_over_verified_tls_with_scram(password: str) -> None:
    with fresh_schema(URL) as url:
        store = make_store(url, "secured")
        await store.connect()
        await store.close()
        with psycopg.connect(url) as conn:
            (ssl,) = conn.execute(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()  # type: ignore[misc]
            method = conn.execute("SHOW password_encryption").fetchone()
    assert ssl is True and method == ("scram-sha-256",)


def test_plaintext_and_a_wrong_password_are_refused(
    password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(f"{BASE}?sslmode=disable", connect_timeout=5)
    monkeypatch.setenv("PGPASSWORD", "wrong-" + password[:4])
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(URL, connect_timeout=5)
