"""The official AsyncAPI tools, installed once per checkout by scripts/asyncapi-tools.

``asyncapi_schema`` is a validator of npm's ``@asyncapi/specs`` ``schemas/3.0.0.json``
(bundled: every ``$ref`` it needs is inside, under its ``$id``, so nothing is fetched);
``parse_with_node`` runs ``@asyncapi/parser`` on a file. Without node and npm, or when
the install fails, the tests that need them skip (and fail under CI=true).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from tidings.testing.servers import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "asyncapi-tools"
VALIDATE = REPO / "scripts" / "asyncapi" / "validate.cjs"
Parse = Callable[[Path], tuple[int, dict[str, Any]]]


@pytest.fixture(scope="session")
def asyncapi_tools() -> Path:
    """Where scripts/asyncapi-tools installed the tools (it installs them if missing)."""
    for command in ("node", "npm"):
        if shutil.which(command) is None:
            skip_or_fail(f"{command} is missing (apt-get install nodejs npm)")
    done = subprocess.run([INSTALL], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        skip_or_fail(f"scripts/asyncapi-tools failed: {done.stderr.strip()[-500:]}")
    where = subprocess.run([INSTALL, "--path"], capture_output=True, text=True, check=True)
    return Path(where.stdout.strip())


@pytest.fixture(scope="session")
def asyncapi_schema(asyncapi_tools: Path) -> Draft7Validator:
    path = asyncapi_tools / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="session")
def parse_with_node(asyncapi_tools: Path) -> Parse:
    """``@asyncapi/parser`` on a document file: its exit code and diagnostics."""

    def parse(document: Path) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            ["node", str(VALIDATE), str(asyncapi_tools), str(document)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)

    return parse
