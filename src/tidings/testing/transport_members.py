"""Consumer group members in child processes, for the transport suite's multi-process cases.

A member runs :func:`member_main` (``python -c 'from tidings.testing.transport_members
import member_main; member_main()' URL GROUP TOPIC OUTPUT HANDLE_SECONDS``) and reports
what it does in its OUTPUT file, which the test reads with :class:`MemberLog`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from tidings.transport import open_transport


def member_main() -> None:
    """A consumer group member in its own process: ``python -c '...member_main()'
    URL GROUP TOPIC OUTPUT HANDLE_SECONDS``.

    Appends ``assign P,P`` to OUTPUT whenever its assignment changes and ``rec P OFFSET
    VALUE`` per record it handles, flushed *before* the ack: a record in the file may be
    unacked, an acked record is always in the file. Leaves the group on SIGTERM.
    """
    url, group, topic, output, handle_seconds = sys.argv[1:6]
    with open(output, "a", buffering=1) as out:  # line-buffered: one write per line
        asyncio.run(_member(url, group, topic, out, float(handle_seconds)))


async def _member(url: str, group: str, topic: str, out: TextIO, handle_seconds: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    transport = await open_transport(url)
    sub = await transport.subscribe(group, [topic])
    last: list[int] | None = None
    while not stop.is_set():
        deliveries = await sub.fetch(max_records=10, timeout=0.1)
        assigned = sorted(p for t, p in sub.assignment() if t == topic)
        if assigned != last:
            out.write(f"assign {','.join(map(str, assigned))}\n")
            last = assigned
        for delivery in deliveries:
            record = delivery.record
            out.write(f"rec {record.partition} {record.offset} {record.value.decode()}\n")
            await asyncio.sleep(handle_seconds)
            await delivery.ack()
    await sub.close()
    await transport.close()


class MemberLog:
    """What a member process wrote to its OUTPUT file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        text = self.path.read_text()
        whole = text if text.endswith("\n") else text.rsplit("\n", 1)[0]  # a killed write
        return [line.split(" ", 3) for line in whole.splitlines() if line]

    def assignment(self) -> set[int] | None:
        assigns = [parts for parts in self.lines() if parts[0] == "assign"]
        if not assigns:
            return None
        # "assign " with nothing after it: a member that has not been given a partition yet.
        return {int(p) for p in assigns[-1][1].split(",") if p} if len(assigns[-1]) > 1 else set()

    def handled(self) -> list[str]:
        return [parts[3] for parts in self.lines() if parts[0] == "rec"]


def child_env() -> dict[str, str]:
    """The environment of a child process, which must import this very copy of tidings."""
    import tidings

    src = str(Path(tidings.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


async def start_member(
    url: str, group: str, topic: str, output: Path, handle_seconds: float
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from tidings.testing.transport_members import member_main; member_main()",
        url,
        group,
        topic,
        str(output),
        str(handle_seconds),
        env=child_env(),
    )


async def stop_member(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
