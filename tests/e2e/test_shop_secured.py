"""The shop on the secured brokers (scripts/services up kafka-secure nats-secure): each
service logs in as itself over TLS, with only the ACLs `tidings acl plan` derives from its
code (applied by `tidings acl apply`). It survives SIGKILLs with every invariant, and no
password appears anywhere in what the run wrote: logs (INFO, JSON), traces, stdout, stderr."""

from __future__ import annotations

import pytest
from shop_runs import POSTGRES, run_with_kills

from shop.demo import Shop
from tidings.testing.postgres import fresh_schema
from tidings.testing.secure import SECURE_DIR, admin_url, service_url
from tidings.testing.servers import require


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["kafka", "nats"])
def test_shop_runs_secured_with_least_privilege_and_never_prints_a_password(
    scheme: str,
    shop_factory,
    secured_users,
    capfd: pytest.CaptureFixture[str],
) -> None:
    require(POSTGRES)
    passwords = secured_users(scheme)  # outside the shop's directory
    with fresh_schema(POSTGRES) as store:
        shop: Shop = shop_factory(service_url(scheme, passwords), store, seed=f"sec-{scheme}")
        shop.env.update(
            TIDINGS_LOG_LEVEL="INFO", TIDINGS_TRACES=f"file:{shop.workdir}/spans-{{service}}.jsonl"
        )
        run_with_kills(shop, service_url(scheme, passwords), store, f"s{scheme[0]}", settle=90,
                       reader=admin_url(scheme))  # fmt: skip
        shop.stop()
    secrets = [p.read_text().strip() for p in passwords.glob("*.pw")]
    secrets.append((SECURE_DIR / f"{scheme}-admin.pw").read_text().strip())
    assert len(secrets) == 4 and all(len(s) >= 16 for s in secrets)
    outputs = {
        str(f): f.read_text(errors="replace") for f in shop.workdir.rglob("*") if f.is_file()
    }
    captured = capfd.readouterr()
    outputs["stdout"], outputs["stderr"] = captured.out, captured.err
    assert any(name.endswith(".jsonl") for name in outputs), "no traces were written"
    assert sum(len(text) for text in outputs.values()) > 10_000  # the run did say things
    for name, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a password appears in {name}"
