"""Services as real processes: one ``tidings run`` each, on one broker and one store.

For demos, end-to-end tests and benchmarks, where services must crash, restart and
talk over a real broker as in production::

    procs = ServiceProcesses(
        workdir, broker, store,
        {"order": "shop.order:service", "inventory": "shop.inventory:service"},
        http={"order": 8000},
    )
    procs.start()          # every service; procs.start("inventory") restarts one
    procs.wait_ready()
    procs.kill("inventory")  # SIGKILL: no clean shutdown
    procs.stop()           # SIGTERM, then SIGKILL after a grace period

Each service's output goes to ``WORKDIR/NAME.log`` (JSON lines unless the environment
says otherwise) and it touches ``WORKDIR/NAME.ready`` once it runs. ``env`` is the
environment they start with; a service in ``metrics_ports`` serves Prometheus metrics on
its port; a service in ``urls`` (``name -> (broker, store)``) gets URLs of its own, e.g.
proxies that fault its links alone; a service in ``args`` gets those options of
``tidings run`` too (``["--relay", "debezium"]``). :func:`start_dashboard` runs ``tidings dashboard`` the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class ServiceProcesses:
    """Named services, each a ``tidings run TARGET`` process with its log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        broker: str,
        store: str,
        targets: Mapping[str, str],
        *,
        http: Mapping[str, int] | None = None,
    ) -> None:
        self.workdir = workdir
        self.broker = broker
        self.store = store
        self.targets = dict(targets)  # name -> package.module:attribute
        self.http = dict(http or {})  # name -> port of its HTTP app on 127.0.0.1
        unknown = self.http.keys() - self.targets.keys()
        if unknown:
            raise ValueError(f"HTTP ports for unknown services: {', '.join(sorted(unknown))}")
        self.env = dict(os.environ)
        self.env.setdefault("TIDINGS_LOG_FORMAT", "json")
        self.metrics_ports: dict[str, int] = {}
        self.urls: dict[str, tuple[str, str]] = {}  # name -> its own (broker, store)
        self.args: dict[str, list[str]] = {}  # name -> more options of its `tidings run`
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _ready_file(self, name: str) -> Path:
        return self.workdir / f"{name}.ready"

    def start(self, *names: str) -> None:
        """Start the named services (all by default), or start again ones that ended;
        starting one that still runs is an error (it would be left running, untracked)."""
        for name in names or tuple(self.targets):
            if name not in self.targets:
                raise LookupError(f"no service {name!r}; known: {', '.join(self.targets)}")
            running = self.procs.get(name)
            if running is not None and running.poll() is None:
                raise RuntimeError(f"service {name} is already running (pid {running.pid})")
            self._ready_file(name).unlink(missing_ok=True)
            broker, store = self.urls.get(name, (self.broker, self.store))
            args = [
                sys.executable, "-m", "tidings", "run", self.targets[name],
                "--broker", broker,
                "--store", store,
                "--ready-file", str(self._ready_file(name)),
            ]  # fmt: skip
            if name in self.http:
                args += ["--http", f"127.0.0.1:{self.http[name]}"]
            args += self.args.get(name, [])
            env = dict(self.env)
            if name in self.metrics_ports:
                env["TIDINGS_METRICS_PORT"] = str(self.metrics_ports[name])
            with open(self.log(name), "ab") as log:
                self.procs[name] = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()
                )

    def kill(self, name: str) -> None:
        """SIGKILL a service: no clean shutdown, as if its machine died."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def pause(self, name: str) -> None:
        """SIGSTOP a service: it holds its connections but neither reads nor heartbeats,
        as if its host froze (a long GC pause, a suspended VM); :meth:`resume` goes on."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT a service paused by :meth:`pause`."""
        self.procs[name].send_signal(signal.SIGCONT)

    def running(self) -> bool:
        """Whether every started service is still running."""
        return all(proc.poll() is None for proc in self.procs.values())

    def rss(self) -> dict[str, int]:
        """Resident memory of each running service process, in KiB (``VmRSS`` of
        ``/proc/PID/status``; Linux only). A service that has ended is left out."""
        sizes: dict[str, int] = {}
        for name, status in self._proc_files("status").items():
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[name] = int(line.split()[1])  # "VmRSS:   123456 kB"
        return sizes

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each running service process has used so far
        (``/proc/PID/stat``; Linux only)."""
        tick = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for name, stat in self._proc_files("stat").items():
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"
            used[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return used

    def _proc_files(self, file: str) -> dict[str, str]:
        """``/proc/PID/FILE`` of each running service process."""
        texts: dict[str, str] = {}
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            try:
                texts[name] = Path(f"/proc/{proc.pid}/{file}").read_text()
            except FileNotFoundError:  # it ended just now
                continue
        return texts

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every started service runs; RuntimeError with the log's tail if one
        exits first, or naming the log directory after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = self.log(name).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"service {name} exited with {proc.returncode}:\n{tail}")
            if all(self._ready_file(name).exists() for name in self.procs):
                return
            time.sleep(0.05)
        raise RuntimeError(f"services not ready after {timeout:.0f}s; logs in {self.workdir}")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every service, then SIGKILL whichever still runs after ``grace`` seconds."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            _reap(proc, grace)


def start_dashboard(
    workdir: Path,
    broker: str,
    port: int,
    timeout: float = 30.0,
    services: Sequence[str] = (),
    store: str = "",
) -> subprocess.Popen[bytes]:
    """Run ``tidings dashboard`` on 127.0.0.1:PORT as a process (its log in
    ``workdir/dashboard.log``) and return once it serves requests. ``services``
    (``module:attribute``) are passed as ``--service``, for its AsyncAPI pages, and
    ``store`` as ``--store``, for their sagas' state in timelines."""
    ready = workdir / "dashboard.ready"
    ready.unlink(missing_ok=True)
    log_path = workdir / "dashboard.log"
    args = [
        sys.executable, "-m", "tidings", "dashboard",
        "--broker", broker,
        "--port", str(port),
        "--ready-file", str(ready),
        *(arg for target in services for arg in ("--service", target)),
        *(("--store", store) if store else ()),
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the dashboard did not start (port {port} taken?):\n{tail}")
        time.sleep(0.05)
    return proc


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL it if it still runs after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _reap(proc, grace)


def _reap(proc: subprocess.Popen[Any], grace: float) -> None:
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
