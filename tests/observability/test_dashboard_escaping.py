"""The dashboard's page (dead letters, events, timelines) shows what producers wrote only
as text: a static check that backs the browser test with hostile payloads
(tests/observability/test_dashboard.py), so a new view cannot slip in raw HTML."""

from __future__ import annotations

import re

from tidings.dashboard.app import INDEX

SINKS = re.compile(
    r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function"
)


def test_the_page_never_turns_data_into_html_or_code() -> None:
    script = INDEX.read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    assert "textContent" in code  # what it uses instead
    assert not SINKS.findall(code), SINKS.findall(code)
