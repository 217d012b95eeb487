"""Options in a broker URL's query string, e.g. ``sqlite:///log.db?session_timeout=2``.

The rules, the same for every broker:

* each broker names its options and how to convert each (``float``, ``int``, ``str``);
  an unknown name, or a value that does not convert, is an :class:`InvalidBrokerURL`
  naming the URL, the option and the known names;
* names under a pass-through prefix (Kafka's ``rdkafka.``) are kept as strings for the
  broker's client library, not checked here;
* what the URL gives overrides what the code gives (keyword arguments, defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tidings.transport.errors import InvalidBrokerURL

__all__ = ["check_heartbeat", "url_options"]

_WHAT: dict[object, str] = {int: "a whole number", float: "a number"}


def url_options(
    url: str, known: Mapping[str, Callable[[str], Any]], *, passthrough: str | None = None
) -> dict[str, Any]:
    """The options of ``url``, each converted as ``known`` says (see the module rules)."""
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if passthrough is not None and name.startswith(passthrough):
            options[name] = raw
            continue
        convert = known.get(name)
        if convert is None:
            names = sorted(known) + ([f"{passthrough}<option>"] if passthrough else [])
            raise InvalidBrokerURL(f"{url!r}: unknown option {name!r}; known: {', '.join(names)}")
        try:
            options[name] = convert(raw)
        except ValueError:
            what = _WHAT.get(convert, "valid")
            raise InvalidBrokerURL(f"{url!r}: option {name}={raw!r} is not {what}") from None
    return options


def check_heartbeat(url: str, heartbeat_interval: float, session_timeout: float) -> None:
    """A member beats more often than the session it must keep alive lasts."""
    if not 0 < heartbeat_interval < session_timeout:
        raise InvalidBrokerURL(f"{url!r}: heartbeat_interval must be below session_timeout")
