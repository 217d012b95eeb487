"""When ``scripts/services up kafka-cluster`` calls a node ready: its own log says, since its
latest start, that the controller unfenced it (``kc_node_running`` in
``scripts/services.d/kafka-cluster.sh``), read under the script's ``set -euo pipefail``."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.d" / "kafka-cluster.sh"
RUNNING = "[2026-12-02 00:17:32,403] INFO [BrokerLifecycleManager id=1] The broker has been "
RUNNING += "unfenced. Transitioning from RECOVERY to RUNNING. (org.apache.kafka.server.X)\n"
NOISE = "[2026-12-02 00:17:28,326] INFO [LogLoader partition=shop.orders-2] Recovering\n"


def running(svc: Path) -> bool:
    done = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; SVC="$1"; SERVICES=(); ENV_LINES=(); '
                       f'source "{SCRIPT}"; kc_node_running 1', "-", str(svc)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1 = not yet; anything else is a crash
    return done.returncode == 0


def node(svc: Path, log: str, mark: int | None) -> Path:
    directory = svc / "kafka-cluster" / "1"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kafka.log").write_text(log)
    if mark is not None:
        (directory / "log-mark").write_text(f"{mark}\n")
    return directory


def test_a_restarted_node_is_not_ready_on_its_previous_life_s_line(tmp_path: Path) -> None:
    before = NOISE + RUNNING  # the line of the incarnation that was SIGKILLed
    node(tmp_path, before + NOISE * 3, mark=len(before))
    assert not running(tmp_path)
    node(tmp_path, before + NOISE * 3 + RUNNING, mark=len(before))
    assert running(tmp_path)


def test_a_long_log_found_early_is_ready_under_pipefail(tmp_path: Path) -> None:
    # A node started before marks existed: the whole log is read. With `grep -q`, grep
    # quit at the first line and tail's SIGPIPE failed the pipeline: never ready.
    node(tmp_path, RUNNING + NOISE * 20_000, mark=None)
    assert running(tmp_path)


def test_a_log_rolled_over_since_the_start_is_read_with_its_previous_file(tmp_path: Path) -> None:
    directory = node(tmp_path, NOISE, mark=10_000)  # smaller than the mark: rolled over
    assert not running(tmp_path)
    (directory / "kafka.log.1").write_text(NOISE + RUNNING)
    assert running(tmp_path)


def test_a_node_without_a_log_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "kafka-cluster" / "1").mkdir(parents=True)
    assert not running(tmp_path)
