"""Network faults on chosen links, through Toxiproxy's HTTP API (``scripts/services up
toxiproxy``, http://127.0.0.1:8474).

A proxy listens on 127.0.0.1:PORT and forwards to one upstream (a broker node,
PostgreSQL); a client given the proxy's address instead of the server's has its link
faulted alone::

    proxies = Toxiproxy()
    port = proxies.create("inventory-pg", "127.0.0.1:5433")
    proxies.cut("inventory-pg")          # connections closed, new ones refused
    proxies.heal("inventory-pg")
    proxies.latency("inventory-pg", 200)  # ms added each way, until heal()

A cut disables the proxy: its open connections are closed and new ones refused, as when a
host's route goes away and the peer's kernel answers. (Toxiproxy's ``timeout`` toxic,
which swallows bytes instead, would corrupt the protocols' framing on heal, which a real
network's retransmissions never do.) This is a thin client by hand: the API is five
JSON calls and the Python clients on PyPI are unmaintained.
"""

from __future__ import annotations

import httpx

from tidings.testing.ports import free_port

URL = "http://127.0.0.1:8474"


class ToxiproxyError(RuntimeError):
    pass


class Toxiproxy:
    """Proxies made through the API at ``url``; :meth:`close` deletes them all."""

    def __init__(self, url: str = URL) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)
        self.names: list[str] = []

    def _call(self, method: str, path: str, body: object = None) -> object:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ToxiproxyError(
                f"no Toxiproxy at {self.url} ({exc}); start it with `scripts/services up toxiproxy`"
            ) from None
        if response.status_code >= 300:
            raise ToxiproxyError(
                f"toxiproxy {method} {path}: {response.status_code} {response.text}"
            )
        return response.json() if response.content else None

    def version(self) -> str:
        """Toxiproxy's version: a check that it answers (ToxiproxyError if not)."""
        return str(self._call("GET", "/version"))

    def create(self, name: str, upstream: str) -> int:
        """A proxy ``name`` to ``upstream`` (host:port) on a free port of 127.0.0.1; its port.
        A proxy left by an earlier run under that name is replaced."""
        if name in self._existing():
            self._call("DELETE", f"/proxies/{name}")
        port = free_port()
        self._call(
            "POST",
            "/proxies",
            {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream, "enabled": True},
        )
        self.names.append(name)
        return port

    def _existing(self) -> set[str]:
        found = self._call("GET", "/proxies")
        return set(found) if isinstance(found, dict) else set()

    def cut(self, *names: str) -> None:
        """Close the proxies' connections and refuse new ones until :meth:`heal`."""
        for name in names:
            self._call("POST", f"/proxies/{name}", {"enabled": False})

    def latency(self, name: str, ms: int) -> None:
        """Delay every chunk of data each way by ``ms`` milliseconds until :meth:`heal`."""
        for stream in ("downstream", "upstream"):
            self._call(
                "POST",
                f"/proxies/{name}/toxics",
                {"name": f"latency_{stream}", "type": "latency", "stream": stream,
                 "attributes": {"latency": ms, "jitter": 0}},
            )  # fmt: skip

    def heal(self, *names: str) -> None:
        """Enable the proxies again and remove their toxics."""
        for name in names:
            self._call("POST", f"/proxies/{name}", {"enabled": True})
            toxics = self._call("GET", f"/proxies/{name}/toxics")
            for toxic in toxics if isinstance(toxics, list) else []:
                self._call("DELETE", f"/proxies/{name}/toxics/{toxic['name']}")

    def close(self) -> None:
        """Delete every proxy this client made."""
        for name in self.names:
            try:
                self._call("DELETE", f"/proxies/{name}")
            except ToxiproxyError:
                pass
        self.names.clear()
        self.http.close()
