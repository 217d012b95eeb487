"""``tidings apikey``: make API keys for a service's HTTP API (``tidings run --api-keys``)."""

from __future__ import annotations

from pathlib import Path

import typer

from tidings.apiguard import key_line, new_key
from tidings.cli.common import console, fail

apikey_app = typer.Typer(help="API keys for services' HTTP APIs.", no_args_is_help=True)


@apikey_app.command("new")
def new(
    client_id: str = typer.Argument(..., help="Who the key is for (rate limits count per client)"),
    keys_file: Path | None = typer.Option(
        None, "--append-to", help="Append the client's line to this keys file"
    ),
) -> None:
    """Print a new key (give it to the client; it is shown once) and its keys-file line."""
    key = new_key()
    try:
        line = key_line(client_id, key)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if keys_file is not None:
        with keys_file.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        keys_file.chmod(0o600)
        console.print(f"appended {client_id} to {keys_file}", highlight=False)
    else:
        console.print(f"keys-file line: {line}", highlight=False, soft_wrap=True)
    console.print(f"key (shown once): {key}", highlight=False, soft_wrap=True)
