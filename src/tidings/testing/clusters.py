"""The three-node clusters of ``scripts/services`` (``kafka-cluster``, ``nats-cluster``) and a
throwaway PostgreSQL, as things a chaos run kills, restarts and asks who leads.

:class:`Cluster` knows each node's pid (the pid files ``scripts/services`` writes under
``.services/<name>/<node>/pid``) and its client address; it SIGKILLs a node, stops one
gracefully, and brings missing nodes back with ``scripts/services up <name>``, which
starts only what is not running and returns once all three serve again. The leader of a
partition comes from the broker itself: Kafka's metadata (the partition's leader id), or
the JetStream stream info on NATS (the stream's Raft leader).

:class:`ScratchPostgres` is a PostgreSQL cluster of its own (``initdb`` in a temporary
directory, its own port, run as the ``postgres`` OS user), so a run can crash and restart
it without touching the shared server other tests use. Everything here needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tidings.testing.ports import free_port

REPO = Path(__file__).resolve().parents[3]
NODES = (1, 2, 3)


class Cluster:
    """``kafka-cluster`` or ``nats-cluster`` of ``scripts/services``: node N serves clients
    on 127.0.0.1:N9092 (Kafka) or 127.0.0.1:N4222 (NATS, monitoring on N8222)."""

    def __init__(self, name: str, repo: Path = REPO) -> None:
        if name not in ("kafka-cluster", "nats-cluster"):
            raise ValueError(f"unknown cluster {name!r}: kafka-cluster or nats-cluster")
        self.name = name
        self.engine = name.removesuffix("-cluster")
        self.repo = repo
        self.dir = (repo / ".services").resolve() / name

    def address(self, node: int) -> str:
        return f"127.0.0.1:{node}{'9092' if self.engine == 'kafka' else '4222'}"

    @property
    def url(self) -> str:
        hosts = ",".join(self.address(n) for n in NODES)
        return f"kafka://{hosts}" if self.engine == "kafka" else f"nats://{hosts}?replicas=3"

    def services(self, command: str) -> None:
        """``scripts/services COMMAND <this cluster>``; RuntimeError with its output if it fails."""
        done = subprocess.run(
            [str(self.repo / "scripts" / "services"), command, self.name],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services {command} {self.name} failed:\n{done.stderr}")

    def fresh(self) -> None:
        """Stop the cluster, forget its data (topics, offsets, groups), start it again."""
        self.services("down")
        for node in NODES:
            shutil.rmtree(self.dir / str(node), ignore_errors=True)
        (self.dir / "cluster-id").unlink(missing_ok=True)
        self.services("up")

    def pid(self, node: int) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.dir / str(node) / "pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        return None

    def kill(self, node: int) -> None:
        """SIGKILL node ``node``: no clean shutdown, as if its machine died."""
        pid = self.pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10)

    def stop(self, node: int, grace: float = 30) -> None:
        """SIGTERM node ``node`` and wait until it has exited (SIGKILL after ``grace``)."""
        pid = self.pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, grace):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)

    def start(self) -> None:
        """Start the nodes that are not running; return once all three serve."""
        self.services("up")

    def leader(self, topic: str, partition: int = 0) -> int:
        """The node that leads ``topic``'s partition (writes go through it)."""
        if self.engine == "kafka":
            from confluent_kafka.admin import AdminClient

            bootstrap = ",".join(self.address(n) for n in NODES if self.pid(n))
            admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
            meta = admin.list_topics(topic, timeout=10)
            return int(meta.topics[topic].partitions[partition].leader)
        stream = f"{topic.replace('.', '_')}-{partition}"  # tidings.transport.nats.wire
        for node in NODES:
            if self.pid(node) is None:
                continue
            url = f"http://127.0.0.1:{node}8222/jsz?accounts=true&streams=true"
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url, timeout=5) as response:
                    info = json.load(response)
                for account in info.get("account_details", []):
                    for detail in account.get("stream_detail", []):
                        if detail["name"] == stream and detail.get("cluster", {}).get("leader"):
                            return int(detail["cluster"]["leader"].removeprefix("n"))
        raise LookupError(f"{self.name}: no node reports a leader for stream {stream}")


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # a zombie: exited, its parent has not reaped it yet
        except OSError:
            return True
        time.sleep(0.1)
    return False


class ScratchPostgres:
    """A PostgreSQL cluster of its own on 127.0.0.1:``port`` (trust auth, database
    ``tidings``), in a temporary directory owned by the ``postgres`` OS user; :meth:`crash`
    stops it as a power cut would (``-m immediate``: recovery on the next start)."""

    def __init__(self, bin_dir: str | None = None) -> None:
        self.bin = Path(bin_dir or _pg_bin())
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-chaos-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/tidings"
        try:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                              "--no-sync")  # fmt: skip
            self.start()
            self._as_postgres("createdb", "-h", "127.0.0.1", "-p", str(self.port), "tidings")
        except BaseException:
            self.close()  # the caller gets no object to close: leave no server or directory
            raise

    def _as_postgres(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            capture_output=True, text=True, timeout=120, cwd=self.dir,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "start", "-w", "-D", str(self.data),
                          "-l", str(self.dir / "log"), "-o", options)  # fmt: skip

    def crash(self) -> None:
        self._as_postgres("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._as_postgres("pg_ctl", "stop", "-m", "fast", "-D", str(self.data))
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin() -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError(
            "no PostgreSQL server binaries; start `scripts/services up postgres` once"
        )
    return str(versions[-1].parent)
