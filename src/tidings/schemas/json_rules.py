"""Can a reader with JSON Schema R read every payload valid under writer schema W?

Hand-written, because no maintained Python library answers it: Confluent's JSON Schema
compatibility lives in its Java registry, and Python's ``jsonschema`` validates
instances, not one schema against another. The rules are written for Tidings' readers,
which are tolerant (an event ignores fields it does not know, see ``messages.py``):

1. **Added optional field** (the reader has it, the writer does not): compatible; the
   reader uses its default. (Confluent's "open content model" calls this a break, since
   an open writer may have sent any value under that name; Tidings' readers only ever
   read what a Tidings writer declared, so the stricter rule would refuse every added
   field.)
2. **Added required field** (the reader requires it, the writer does not have it, or has
   it optional): a break, the writer may leave it out. This is also the rule for
   **required changes**: optional -> required breaks a reader that requires it.
3. **Removed field** (the writer has it, the reader does not): compatible, the reader
   ignores it, unless the reader forbids unknown fields (``additionalProperties:
   false``, a Command), then a break.
4. **additionalProperties**: a reader that forbids unknown fields, reading a writer that
   allows them, is a break; a map (``additionalProperties`` a schema) compares its
   value schemas.
5. **Types**: the reader must accept each type the writer may send. ``integer`` ->
   ``number`` is a widening (compatible); ``number`` -> ``integer`` a narrowing and any
   other change a break. A union (``anyOf``/``oneOf``, or a list of types, so also
   ``T | None``) compares each writer branch with the reader branches: one must accept
   it. A ``format`` the reader requires that the writer does not promise is a break.
6. **Enums** (``enum``, ``const``): every value the writer may send must be one the reader
   knows. So values added break an old reader (FORWARD) and values removed break a new
   reader of old data (BACKWARD).
7. Nested objects (``$ref`` into ``$defs``), array ``items`` and map values are compared
   by the same rules, and each break names its path: ``lines[].quantity``.

Not compared: numeric and length bounds, patterns, and references to other documents.

The compatibility modes (BACKWARD, FORWARD, FULL) are built from this one question in
:mod:`tidings.schemas.compatibility`.
"""

from __future__ import annotations

from typing import Any

from tidings.schemas.breaks import Break

Schema = dict[str, Any]


def json_reads(reader: Schema, writer: Schema) -> list[Break]:
    """The breaks that keep ``reader`` from reading data written with ``writer``."""
    return _Walk(reader, writer).compare(reader, writer, "")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Walk:
    def __init__(self, reader_root: Schema, writer_root: Schema) -> None:
        self.roots = (reader_root, writer_root)
        self.seen: set[tuple[int, int]] = set()  # recursive models: compare each pair once

    def resolve(self, schema: Any, side: int) -> Schema:
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise ValueError(f"$ref {ref!r}: only references inside the document are read")
            target: Any = self.roots[side]
            for part in ref[2:].split("/"):
                target = target[part]
            schema = target
        if schema is True:
            return {}
        return schema if isinstance(schema, dict) else {}

    def branches(self, schema: Schema, side: int) -> list[Schema]:
        schema = self.resolve(schema, side)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return [b for s in schema[keyword] for b in self.branches(s, side)]
        kinds = schema.get("type")
        if isinstance(kinds, list):
            return [{**schema, "type": k} for k in kinds]
        return [schema]

    def compare(self, reader: Any, writer: Any, path: str) -> list[Break]:
        key = (id(reader), id(writer))
        if key in self.seen:
            return []
        self.seen.add(key)
        readers, writers = self.branches(reader, 0), self.branches(writer, 1)
        if len(readers) == 1 and len(writers) == 1:
            return self.one(readers[0], writers[0], path)
        breaks: list[Break] = []
        for w in writers:
            tries = [self.one(r, w, path) for r in readers]
            if any(not t for t in tries):
                continue
            same_kind: list[list[Break]] = [
                t for r, t in zip(readers, tries, strict=True) if _kind(r) == _kind(w)
            ]
            if same_kind:
                fewest: list[Break] = min(same_kind, key=len)
                breaks.extend(fewest)
            else:
                accepted = ", ".join(sorted({_kind(r) for r in readers}))
                breaks.append(
                    Break(path, f"the writer may send {_kind(w)}, the reader accepts {accepted}")
                )
        return breaks

    def one(self, r: Schema, w: Schema, path: str) -> list[Break]:
        if not r or r.get("not") == {}:
            return [] if not r else [Break(path, "the reader accepts no value here")]
        if not w:
            return [Break(path, f"the writer may send any value, the reader accepts {_kind(r)}")]
        r_values, w_values = _values(r), _values(w)
        if r_values is not None:
            if w_values is None:
                return [Break(path, f"the writer may send any {_kind(w)}, the reader accepts "
                                    f"only {_show(r_values)}")]  # fmt: skip
            unknown = [v for v in w_values if v not in r_values]
            if unknown:
                return [Break(path, f"the reader does not know the value(s) {_show(unknown)} "
                                    f"(it knows {_show(r_values)})")]  # fmt: skip
            return []
        r_kind, w_kind = _kind(r), _kind(w)
        if r_kind != w_kind and not (w_kind == "integer" and r_kind == "number"):
            how = "narrowed" if (w_kind, r_kind) == ("number", "integer") else "changed"
            return [Break(path, f"type {how} from {w_kind} to {r_kind}")]
        if "format" in r and r.get("format") != w.get("format"):
            return [Break(path, f"the reader requires format {r['format']}, the writer "
                                f"promises {w.get('format', 'none')}")]  # fmt: skip
        if r_kind == "object":
            return self.objects(r, w, path)
        if r_kind == "array":
            return self.compare(r.get("items", {}), w.get("items", {}), path + "[]")
        return []

    def objects(self, r: Schema, w: Schema, path: str) -> list[Break]:
        breaks: list[Break] = []
        r_props, w_props = r.get("properties", {}), w.get("properties", {})
        r_req, w_req = set(r.get("required", ())), set(w.get("required", ()))
        r_extra, w_extra = r.get("additionalProperties", True), w.get("additionalProperties", True)
        for name in sorted(r_req - w_req):
            why = (
                "the writer may leave it out" if name in w_props else "the writer does not have it"
            )
            breaks.append(Break(_join(path, name), f"required by the reader, but {why}"))
        for name in sorted(w_props):
            where = _join(path, name)
            if name in r_props:
                breaks.extend(self.compare(r_props[name], w_props[name], where))
            elif r_extra is False:
                breaks.append(Break(where, "the writer sends it, and the reader forbids fields "
                                           "it does not know (additionalProperties: false)"))  # fmt: skip
            elif isinstance(r_extra, dict):
                breaks.extend(self.compare(r_extra, w_props[name], where))
        if isinstance(w_extra, dict):
            for name in sorted(set(r_props) - set(w_props)):
                breaks.extend(self.compare(r_props[name], w_extra, _join(path, name)))
        if r_extra is False and w_extra is not False:
            breaks.append(Break(_join(path, "additionalProperties"),
                                "the reader forbids unknown fields, the writer allows them"))  # fmt: skip
        elif isinstance(r_extra, dict) and isinstance(w_extra, dict):
            breaks.extend(self.compare(r_extra, w_extra, path + "{}"))
        elif isinstance(r_extra, dict) and w_extra is not False:
            breaks.append(Break(path + "{}", "the writer allows any extra value, the reader "
                                             "constrains them"))  # fmt: skip
        return breaks


def _values(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return list(enum) if isinstance(enum, list) else None


def _kind(schema: Schema) -> str:
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    values = _values(schema)
    if values:
        return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
            type(values[0]), "value"
        )
    return "any value"


def _show(values: list[Any]) -> str:
    return ", ".join(repr(v) for v in values)
