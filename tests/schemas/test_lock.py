"""`tidings schema lock` and `check`: the shop's locked schemas are those of its code, and
a breaking change fails `check` with the subject, the rule and the field."""

from __future__ import annotations

from pathlib import Path

from tidings.cli.schema import lock_files, published_types
from tidings.testing.commands import tidings

REPO = Path(__file__).resolve().parents[2]
SHOP = [
    "shop.order:service",
    "shop.inventory:service",
    "shop.billing:service",
    "shop.orchestrator:service",
]


def test_the_shops_lock_is_up_to_date_with_its_code() -> None:
    locked = {p.name: p.read_text() for p in (REPO / "schemas").glob("*.json")}
    current = lock_files(published_types(SHOP))
    assert locked == current, (
        "schemas/ differs from the shop's code: run "
        "`tidings schema lock shop.order:service shop.inventory:service shop.billing:service "
        "shop.orchestrator:service` "
        "and review the diff"
    )


def write(directory: Path, fields: str) -> None:
    lines = [
        "from tidings import Event, Service",
        "class Greeted(Event, topic='greetings', key='name'):",
        *(f"    {line}" for line in fields.splitlines()),
        "service = Service('greeter', publishes=[Greeted])",
    ]
    (directory / "greet.py").write_text("\n".join(lines) + "\n")


def test_lock_then_check_passes_until_a_change_breaks(tmp_path: Path) -> None:
    write(tmp_path, "name: str\ntext: str")
    locked = tidings("schema", "lock", "greet:service", cwd=tmp_path)
    assert locked.returncode == 0, locked.stderr
    lock_file = tmp_path / "schemas" / "greetings-Greeted.json"
    first = lock_file.read_text()
    assert tidings("schema", "lock", "greet:service", cwd=tmp_path).returncode == 0
    assert lock_file.read_text() == first  # deterministic: no diff without a change
    assert tidings("schema", "check", "greet:service", cwd=tmp_path).returncode == 0

    write(tmp_path, "name: str\ntext: str\nlang: str = 'en'")  # compatible
    assert tidings("schema", "check", "greet:service", cwd=tmp_path).returncode == 0
    write(tmp_path, "name: str\ntimes: int")  # times required: a break
    checked = tidings("schema", "check", "greet:service", "--against", "schemas", cwd=tmp_path)
    assert checked.returncode == 1
    assert checked.stderr.strip() == (
        "greetings-Greeted (BACKWARD_TRANSITIVE): times: required by the reader, but the "
        "writer does not have it (the new schema reading version 1's data)"
    )


def test_a_service_that_declares_nothing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bare.py").write_text("from tidings import Service\nservice = Service('bare')\n")
    refused = tidings("schema", "lock", "bare:service", cwd=tmp_path)
    assert refused.returncode == 2
    assert "declares nothing it publishes" in refused.stderr
