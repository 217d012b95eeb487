"""The secured servers of ``scripts/services up kafka-secure nats-secure postgres-secure``
for tests: their admin URLs, per-service URLs, and granting the shop's ACLs.

The CA and the admin passwords are under ``.services/secure`` of the checkout
(``TIDINGS_SECURE_DIR`` overrides it). A test calls :func:`require_secure` first: a
server that is not running skips it with the start command (fails it under ``CI=true``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tidings.testing.servers import require, skip_or_fail

REPO = Path(__file__).resolve().parents[3]
SECURE_DIR = Path(os.environ.get("TIDINGS_SECURE_DIR") or REPO / ".services" / "secure")
CA = SECURE_DIR / "ca.pem"
NATS_DIR = SECURE_DIR.parent / "nats-secure"
PORTS = {"kafka": 9192, "nats": 4322}
SHOP = ("shop.order:service", "shop.inventory:service", "shop.billing:service")


def admin_url(scheme: str) -> str:
    """The admin (super user) URL of the secured ``kafka`` or ``nats`` server."""
    return (
        f"{scheme}://admin@127.0.0.1:{PORTS[scheme]}?tls_ca={CA}"
        f"&password_file={SECURE_DIR / f'{scheme}-admin.pw'}"
    )


def service_url(scheme: str, passwords: Path, user: str = "{service}") -> str:
    """A URL where each service logs in as itself, its password in ``passwords/<name>.pw``."""
    return (
        f"{scheme}://{user}@127.0.0.1:{PORTS[scheme]}?tls_ca={CA}"
        f"&password_file={passwords}/{user}.pw"
    )


def require_secure(scheme: str) -> None:
    """Skip (fail under CI) unless the secured server and its CA are there."""
    require(f"{scheme}://127.0.0.1:{PORTS[scheme]}")
    if not CA.is_file() or not (SECURE_DIR / f"{scheme}-admin.pw").is_file():
        skip_or_fail(
            f"{scheme}-secure: no CA or admin password in {SECURE_DIR}; start it with"
            f" `scripts/services up {scheme}-secure`"
        )


def acl(command: str, scheme: str, passwords: Path, *targets: str) -> str:
    """Run ``tidings acl COMMAND`` for ``targets`` (default: the shop) against the secured
    ``scheme`` server as its admin; its output (a failure raises with it)."""
    args = [
        sys.executable, "-m", "tidings", "acl", command, *(targets or SHOP),
        "--broker", admin_url(scheme),
    ]  # fmt: skip
    if command == "apply":
        args += ["--password-dir", str(passwords)]
    if scheme == "nats":
        args += ["--nats-config", str(NATS_DIR / "authorization.conf")]
        if command == "apply":
            args += ["--nats-pid", str(NATS_DIR / "pid"), "--nats-monitor", "http://127.0.0.1:8322"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"tidings acl {command} failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr
