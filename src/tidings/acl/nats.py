"""NATS users and permissions as a configuration fragment, written and reloaded.

NATS has no admin API for users: they live in the server's configuration. The secured
server of ``scripts/services`` includes ``authorization.conf`` from its directory, and this
module writes that fragment: the admin user (all permissions) and one user per service
with the permissions of :func:`tidings.acl.plan.nats_permissions`. NATS configuration is
a superset of JSON, so the fragment is ``authorization: <JSON>``, which :func:`read`
parses back for the drift check. Rules:

* the file is written whole, to a temporary file renamed over the old one (mode 600: it
  holds the passwords), so a crash leaves the old or the new fragment, never half;
* :func:`reload` sends the server SIGHUP (its documented reload signal) and waits until
  its monitoring endpoint reports a newer configuration load time.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["read", "reload", "render", "write"]

HEADER = "# written by tidings acl apply: users and permissions derived from the code\n"
Permissions = dict[str, dict[str, list[str]]]


def render(admin: tuple[str, str], users: dict[str, tuple[str, Permissions]]) -> str:
    """The fragment: ``admin`` (name, password) and each user's (password, permissions)."""
    entries: list[dict[str, Any]] = [{"user": admin[0], "password": admin[1]}]
    for name in sorted(users):
        password, permissions = users[name]
        entries.append({"user": name, "password": password, "permissions": permissions})
    return HEADER + "authorization: " + json.dumps({"users": entries}, indent=2) + "\n"


def read(path: Path) -> dict[str, Permissions | None]:
    """Each user of the fragment at ``path`` and its permissions (None: unrestricted)."""
    text = path.read_text()
    body = text.split("authorization:", 1)[-1]
    try:
        users = json.loads(body)["users"]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a fragment written by tidings acl apply ({exc})") from None
    return {u["user"]: u.get("permissions") for u in users}


def passwords(path: Path) -> dict[str, str]:
    """The users' passwords in the fragment (kept when it is written again)."""
    if not path.exists():
        return {}
    users = json.loads(path.read_text().split("authorization:", 1)[-1])["users"]
    return {u["user"]: u["password"] for u in users}


def write(path: Path, text: str) -> None:
    """Replace the fragment atomically, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def _load_time(monitor: str) -> str:
    with urllib.request.urlopen(f"{monitor}/varz", timeout=2) as response:
        return str(json.load(response).get("config_load_time", ""))


def reload(pid: int, monitor: str | None, within: float = 10.0) -> None:
    """SIGHUP the server ``pid``; with ``monitor`` (http://host:port) wait until it
    reloaded, else a RuntimeError saying so."""
    before = _load_time(monitor) if monitor else ""
    os.kill(pid, signal.SIGHUP)
    if not monitor:
        time.sleep(0.5)
        return
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _load_time(monitor) != before:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nats-server (pid {pid}) did not reload within {within:g} s; see its log")
