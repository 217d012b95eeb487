"""An AsyncAPI document as one readable HTML page, rendered on the server.

No script, no CDN, no network: the page is built from the document alone, every value
escaped (names and descriptions come from user code). It shows the servers, the
channels with who publishes and consumes them, the operations per service, and per
message its attributes and a table of its payload fields.

AsyncAPI's own HTML renderer (@asyncapi/react-component) is a browser bundle that would
have to be vendored; this page is a small hand-written renderer of the same document.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from typing import Any

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem 2rem;
color:#1d2330;background:#fafbfc}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d8dde5}
h3{margin:1.6rem 0 .4rem}code{background:#eef1f5;padding:0 .25rem;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem;background:#fff}
th,td{border:1px solid #d8dde5;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f5}.send{color:#0a6b2f}.receive{color:#174ea6}.muted{color:#667085}
nav a{margin-right:1rem}
"""


def render_page(document: dict[str, Any]) -> str:
    """The whole HTML page of ``document`` (an AsyncAPI 3.0 document as a dict)."""
    info = document.get("info", {})
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(info.get('title', 'AsyncAPI'))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(info.get('title', ''))}</h1>",
        f'<p class="muted">AsyncAPI {_e(document.get("asyncapi", "?"))} · version '
        f'{_e(info.get("version", "?"))} · <a href="asyncapi.json">asyncapi.json</a></p>',
        f"<p>{_e(info.get('description', ''))}</p>",
        '<nav><a href="#servers">Servers</a><a href="#channels">Channels</a>'
        '<a href="#operations">Operations</a><a href="#messages">Messages</a></nav>',
    ]
    parts += _servers(document.get("servers", {}))
    parts += _channels(document)
    parts += _operations(document)
    parts += _messages(document)
    parts.append("</body></html>")
    return "\n".join(parts)


def _servers(servers: dict[str, Any]) -> Iterator[str]:
    yield '<h2 id="servers">Servers</h2>'
    if not servers:
        yield '<p class="muted">None named (<code>--server NAME=URL</code>).</p>'
        return
    yield "<table><tr><th>name</th><th>protocol</th><th>host</th><th>description</th></tr>"
    for name, server in servers.items():
        host = server.get("host", "") + (server.get("pathname") or "")
        yield _row(name, server.get("protocol", ""), host, server.get("description", ""))
    yield "</table>"


def _channels(document: dict[str, Any]) -> Iterator[str]:
    yield '<h2 id="channels">Channels</h2>'
    yield "<table><tr><th>address</th><th>messages</th><th>sent by</th><th>received by</th></tr>"
    for channel_id, channel in document.get("channels", {}).items():
        by: dict[str, list[str]] = {"send": [], "receive": []}
        for op_id, op in document.get("operations", {}).items():
            if op.get("channel", {}).get("$ref") == f"#/channels/{channel_id}":
                by.setdefault(op.get("action", ""), []).append(op_id.split(".", 1)[0])
        messages = ", ".join(
            f'<a href="#message-{_e(m)}">{_e(m)}</a>' for m in channel.get("messages", {})
        )
        yield (
            f'<tr id="channel-{_e(channel_id)}"><td><code>{_e(channel.get("address", ""))}'
            f"</code></td><td>{messages}</td><td>{_e(', '.join(by['send']))}</td>"
            f"<td>{_e(', '.join(by['receive']))}</td></tr>"
        )
    yield "</table>"


def _operations(document: dict[str, Any]) -> Iterator[str]:
    yield '<h2 id="operations">Operations</h2>'
    by_service: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for op_id, op in document.get("operations", {}).items():
        by_service.setdefault(op_id.split(".", 1)[0], []).append((op_id, op))
    for service, ops in by_service.items():
        yield f'<h3 id="service-{_e(service)}">{_e(service)}</h3>'
        yield "<table><tr><th>action</th><th>channel</th><th>messages</th><th>handler</th></tr>"
        for _, op in ops:
            action = op.get("action", "")
            channel = _last(op.get("channel", {}).get("$ref", ""))
            address = document.get("channels", {}).get(channel, {}).get("address", channel)
            handlers = op.get("x-tidings-handlers", {})
            for ref in op.get("messages", []):
                m = _last(ref.get("$ref", ""))
                yield (
                    f'<tr><td class="{_e(action)}">{_e(action)}</td><td><code>{_e(address)}'
                    f'</code></td><td><a href="#message-{_e(m)}">{_e(m)}</a></td>'
                    f"<td>{_e(handlers.get(m, ''))}</td></tr>"
                )
        yield "</table>"


def _messages(document: dict[str, Any]) -> Iterator[str]:
    yield '<h2 id="messages">Messages</h2>'
    components = document.get("components", {})
    schemas = components.get("schemas", {})
    for message_id, message in components.get("messages", {}).items():
        yield f'<h3 id="message-{_e(message_id)}">{_e(message.get("name", message_id))}</h3>'
        if message.get("summary"):
            yield f"<p>{_e(message['summary'])}</p>"
        key = message.get("bindings", {}).get("kafka", {}).get("key")
        yield (
            f'<p class="muted">{_e(message.get("description", ""))} Content type '
            f"<code>{_e(message.get('contentType', ''))}</code>"
            + (f"; Kafka key: {_e(key.get('description', ''))}" if key else "")
            + "</p>"
        )
        envelope = _resolve(message.get("headers", {}), schemas)
        payload = _resolve(message.get("payload", {}), schemas)
        structured = "data" in payload.get("properties", {})
        if structured:  # the attributes and the data are in the event
            envelope = payload
            payload = _resolve(payload["properties"]["data"], schemas)
        attributes = {k: v for k, v in envelope.get("properties", {}).items() if k != "data"}
        required = set(envelope.get("required", []))
        pinned = [(k, v["const"]) for k, v in attributes.items() if "const" in v]
        if pinned:
            yield (
                "<p>"
                + " · ".join(f"<code>{_e(k)}</code> = <code>{_e(v)}</code>" for k, v in pinned)
                + "</p>"
            )
        if attributes:
            names = " ".join(
                f"<code>{_e(k)}{'' if k in required else '?'}</code>" for k in attributes
            )
            where = "In the event" if structured else "Headers"
            yield f"<p>{where} (? optional): {names}</p>"
        yield "<table><tr><th>field</th><th>type</th><th>required</th><th>constraints</th></tr>"
        yield from _fields(payload, schemas, "")
        yield "</table>"


def _fields(schema: dict[str, Any], schemas: dict[str, Any], prefix: str) -> Iterator[str]:
    """A row per field, nested models and lists of models flattened (``lines[].sku``)."""
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        field = _resolve(prop, schemas)
        items = _resolve(field.get("items", {}), schemas)
        yield _row(
            prefix + name,
            _type(prop, schemas),
            "yes" if name in required else "no",
            _constraints(field),
        )
        if field.get("properties"):
            yield from _fields(field, schemas, f"{prefix}{name}.")
        elif items.get("properties"):
            yield from _fields(items, schemas, f"{prefix}{name}[].")


def _type(prop: dict[str, Any], schemas: dict[str, Any]) -> str:
    if "$ref" in prop:
        return _last(prop["$ref"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in prop:
            return " | ".join(_type(p, schemas) for p in prop[combinator])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"array of {_type(prop.get('items', {}), schemas)}"
    return f"{kind} ({prop['format']})" if "format" in prop else str(kind)


_CONSTRAINTS = (
    "const", "enum", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "default",
)  # fmt: skip


def _constraints(field: dict[str, Any]) -> str:
    return ", ".join(f"{k} {json.dumps(field[k])}" for k in _CONSTRAINTS if k in field)


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Follow ``#/components/schemas/X`` and merge an ``allOf`` into the schema itself."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(_last(ref), {})
    if "allOf" in schema:
        merged: dict[str, Any] = {"properties": {}, "required": []}
        for part in [*(_resolve(p, schemas) for p in schema["allOf"]), schema]:
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return merged
    return schema


def _row(*cells: object) -> str:
    return "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"


def _last(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
