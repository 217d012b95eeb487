"""``tidings acl plan|apply|check``: broker permissions derived from the services' code.

``plan`` prints, per service, the Kafka ACLs and the NATS permissions it needs
(:mod:`tidings.acl.plan`); ``apply`` grants them on a Kafka broker (admin API) or writes
the NATS users' fragment and reloads the server; ``check`` compares what is granted with
the plan and exits 1 on any drift (missing or extra), one line each.

Passwords of the service users (``--password-dir DIR``): ``DIR/<service>.pw``, made
(random, mode 600) when missing. They are never printed.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import typer

from tidings.acl import kafka as kafka_acl
from tidings.acl import nats as nats_acl
from tidings.acl.plan import Needs, kafka_acls, nats_permissions, needs
from tidings.cli.common import console, fail, load_services
from tidings.credentials import redact, remember_secret, split_credentials
from tidings.transport.errors import TransportError

acl_app = typer.Typer(help="Broker ACLs derived from the services' code.", no_args_is_help=True)

TARGETS = typer.Argument(
    ..., help="Services, as package.module:attribute (e.g. shop.order:service)"
)
BROKER = typer.Option(..., "--broker", help="Admin URL of a kafka:// or nats:// broker")
PASSWORDS = typer.Option(
    None,
    "--password-dir",
    help="Passwords of the service users: DIR/<service>.pw (made if missing)",
)
NATS_CONFIG = typer.Option(
    None, "--nats-config", help="The NATS users fragment the server includes (nats:// only)"
)


def _needs(targets: list[str]) -> list[Needs]:
    try:
        return [needs(s) for s in load_services(targets)]
    except (LookupError, TypeError, ValueError) as exc:
        raise fail(str(exc)) from None


@acl_app.command("plan")
def plan(
    targets: list[str] = TARGETS,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text"),
) -> None:
    """Print the Kafka ACLs and NATS permissions each service needs, and nothing more."""
    needed = _needs(targets)
    if as_json:
        document = {
            n.service: {
                "group": n.group, "reads": list(n.reads), "writes": list(n.writes),
                "kafka": [str(a) for a in kafka_acls([n])], "nats": nats_permissions(n),
            }
            for n in needed
        }  # fmt: skip
        console.print_json(json.dumps(document))
        return
    for n in needed:
        console.print(f"[bold]{n.service}[/] (group {n.group})", highlight=False)
        console.print(f"  reads:  {', '.join(n.reads)}", highlight=False)
        console.print(f"  writes: {', '.join(n.writes)}", highlight=False)
        console.print("  kafka ACLs (ALLOW, literal):", highlight=False)
        for acl in kafka_acls([n]):
            console.print(f"    {acl}", highlight=False)
        permissions = nats_permissions(n)
        console.print("  nats permissions:", highlight=False)
        for direction in ("publish", "subscribe"):
            allow = ", ".join(permissions[direction]["allow"])
            console.print(f"    {direction} allow: {allow}", highlight=False)


def _passwords(directory: Path | None, names: list[str]) -> dict[str, str]:
    if directory is None:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    found = {}
    for name in names:
        path = directory / f"{name}.pw"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24) + "\n")
        found[name] = path.read_text().strip()
        remember_secret(found[name])
    return found


def _scheme(broker: str) -> str:
    scheme = broker.partition("://")[0]
    if scheme not in ("kafka", "nats"):
        raise fail(f"{redact(broker)!r}: tidings acl works on kafka:// and nats:// brokers")
    return scheme


@acl_app.command("apply")
def apply(
    targets: list[str] = TARGETS,
    broker: str = BROKER,
    password_dir: Path | None = PASSWORDS,
    nats_config: Path | None = NATS_CONFIG,
    nats_pid: Path | None = typer.Option(None, "--nats-pid", help="pid file of nats-server"),
    nats_monitor: str | None = typer.Option(
        None, "--nats-monitor", help="nats-server monitoring URL, to wait for the reload"
    ),
    prune: bool = typer.Option(False, "--prune", help="Kafka: delete ACLs the plan lacks"),
) -> None:
    """Grant what the plan lists (and create the service users with --password-dir)."""
    needed = _needs(targets)
    passwords = _passwords(password_dir, [n.service for n in needed])
    try:
        if _scheme(broker) == "kafka":
            admin, shown = kafka_acl.admin_client(broker)
            kafka_acl.upsert_users(admin, shown, passwords)
            created, deleted = kafka_acl.apply(admin, shown, kafka_acls(needed), prune=prune)
            for acl in created:
                console.print(f"granted {acl}", highlight=False)
            for acl in deleted:
                console.print(f"revoked {acl}", highlight=False)
            console.print(f"{len(created)} granted, {len(deleted)} revoked on {shown}")
            return
        if nats_config is None:
            raise fail("a nats:// broker needs --nats-config FILE (the users fragment)")
        credentials, _ = split_credentials(broker)
        if credentials.username is None or credentials.password is None:
            raise fail("--broker must name the admin user and password_file= or password_env=")
        kept = nats_acl.passwords(nats_config)
        users = {
            n.service: (passwords.get(n.service) or kept.get(n.service) or "", nats_permissions(n))
            for n in needed
        }
        missing = [name for name, (password, _) in users.items() if not password]
        if missing:
            raise fail(f"no password for {', '.join(missing)}: give --password-dir DIR")
        fragment = nats_acl.render((credentials.username, credentials.password), users)
        nats_acl.write(nats_config, fragment)
        console.print(f"wrote {len(users)} user(s) to {nats_config}", highlight=False)
        if nats_pid is not None:
            nats_acl.reload(int(nats_pid.read_text().split()[0]), nats_monitor)
            console.print("nats-server reloaded", highlight=False)
    except (TransportError, OSError, RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from None


@acl_app.command("check")
def check(
    targets: list[str] = TARGETS,
    broker: str = BROKER,
    nats_config: Path | None = NATS_CONFIG,
) -> None:
    """Compare what is granted with the plan: one line per difference, exit 1 on drift."""
    needed = _needs(targets)
    drift: list[str] = []
    try:
        if _scheme(broker) == "kafka":
            admin, shown = kafka_acl.admin_client(broker)
            wanted = set(kafka_acls(needed))
            have = kafka_acl.granted(admin, shown, {a.principal for a in wanted})
            drift += [f"missing: {a}" for a in sorted(wanted - have)]
            drift += [f"extra:   {a}" for a in sorted(have - wanted)]
        else:
            if nats_config is None:
                raise fail("a nats:// broker needs --nats-config FILE (the users fragment)")
            granted = nats_acl.read(nats_config)
            for n in needed:
                if n.service not in granted:
                    drift.append(f"missing: nats user {n.service}")
                elif granted[n.service] != nats_permissions(n):
                    drift.append(
                        f"differs: nats user {n.service} has {json.dumps(granted[n.service])},"
                        f" needs {json.dumps(nats_permissions(n))}"
                    )
    except (TransportError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    for line in drift:
        console.print(line, highlight=False, soft_wrap=True)
    if drift:
        raise typer.Exit(1)
    console.print(f"no drift: {len(needed)} service(s) have exactly what their code needs")
