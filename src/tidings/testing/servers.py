"""Tests that need a real server: skip with how to start it, or fail under CI.

Under ``CI=true`` a missing server fails the test: CI must never go green without having
run what it claims to run. Elsewhere the test is skipped with the backend's name and the
command that starts it. :func:`require` checks by URL (a TCP connect);
:func:`skip_or_fail` is the rule itself, for a test that found out another way.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
from types import ModuleType
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

_DEFAULT_PORTS = {
    "kafka": 9092, "nats": 4222, "postgresql": 5432, "postgres": 5432, "amqp": 5672,
    "sqs+sns": 443, "eventbridge": 443, "kafka-connect": 8083,
}  # fmt: skip
_SERVICE = {
    "kafka": "kafka", "nats": "nats", "postgresql": "postgres", "postgres": "postgres",
    "amqp": "rabbitmq", "sqs+sns": "aws", "eventbridge": "aws", "kafka-connect": "connect",
}  # fmt: skip
# The secured servers of scripts/services.d/secure.sh, by port.
_SECURE_SERVICE = {9192: "kafka-secure", 4322: "nats-secure", 5433: "postgres-secure"}


@functools.cache
def unreachable(url: str) -> str | None:
    """Why the server of ``url`` cannot be reached (a TCP connect), or None if it can.
    A URL naming several hosts (``nats://h1:14222,h2:24222``: a cluster, started with
    ``scripts/services up nats-cluster``) needs every one of them."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or (
        _SERVICE[parts.scheme] == "aws" and not parts.hostname
    ):
        return None  # not a server of ours (an AWS URL without a host is AWS itself)
    hosts = parts.netloc.rsplit("@", 1)[-1].split(",")
    cluster = "-cluster" if len(hosts) > 1 else ""
    for hostport in hosts:
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        address = (host or "127.0.0.1", int(port or _DEFAULT_PORTS[parts.scheme]))
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError as exc:
            service = _SECURE_SERVICE.get(address[1]) or _SERVICE[parts.scheme] + cluster
            return (
                f"{service}: {url} is unreachable ({exc}); start it with"
                f" `scripts/services up {service}`"
            )
    return None


def skip_or_fail(reason: str, *, module_level: bool = False) -> NoReturn:
    """Skip the calling test (or module), or fail it under ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def require(*urls: str) -> None:
    """Skip the calling test (fail it under CI) unless every server is reachable."""
    for url in urls:
        reason = unreachable(url)
        if reason:
            skip_or_fail(reason)


def require_module(name: str, why: str) -> ModuleType:
    """Import ``name`` for a test module; without it the module is skipped (a failure
    under CI), naming the package and why the tests need it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"{name} is not installed ({why}): {exc}", module_level=True)
