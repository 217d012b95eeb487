"""A free TCP port, for a server a test or a demo is about to start."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; another process may still
    take it before the caller binds it, so bind soon)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
