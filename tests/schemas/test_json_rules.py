"""The JSON Schema rules of tidings.schemas.json_rules, one change each, in every mode:
each mode accepts one change and refuses another, and each break names its field."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.schemas import Mode, check


def obj(required: tuple[str, ...] = (), closed: bool = False, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


STR, INT, NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}
BASE = obj(("id",), id=STR, n=INT)

# One change per rule of the module docstring: (name, old, new, modes that accept it).
B, F = {Mode.BACKWARD, Mode.BACKWARD_TRANSITIVE}, {Mode.FORWARD, Mode.FORWARD_TRANSITIVE}
ALL = {*B, *F, Mode.FULL, Mode.FULL_TRANSITIVE}
CHANGES: list[tuple[str, dict[str, Any], dict[str, Any], set[Mode], str]] = [
    ("added optional field", BASE, obj(("id",), id=STR, n=INT, note=STR), ALL, ""),
    ("added required field", BASE, obj(("id", "note"), id=STR, n=INT, note=STR), F, "note"),
    ("removed optional field", BASE, obj(("id",), id=STR), ALL, ""),
    ("removed required field", BASE, obj((), n=INT), B, "id"),
    ("optional -> required", BASE, obj(("id", "n"), id=STR, n=INT), F, "n"),
    ("required -> optional", BASE, obj((), id=STR, n=INT), B, "id"),
    ("integer widened to number", BASE, obj(("id",), id=STR, n=NUM), B, "n"),
    ("number narrowed to integer", obj(("id",), id=STR, n=NUM), BASE, F, "n"),
    ("type changed", BASE, obj(("id",), id=STR, n=STR), set(), "n"),
    ("T -> T | None", BASE, obj(("id",), id=STR, n={"anyOf": [INT, {"type": "null"}]}), B, "n"),
    ("enum value added", obj(s={"enum": ["a"]}), obj(s={"enum": ["a", "b"]}), B, "s"),
    ("enum value removed", obj(s={"enum": ["a", "b"]}), obj(s={"enum": ["a"]}), F, "s"),
    ("reader closed (additionalProperties)", BASE, obj(("id",), True, id=STR, n=INT), F, "additionalProperties"),
    ("closed reader meets removed field", obj(("id",), True, id=STR, n=INT), obj(("id",), True, id=STR), F, "n"),
    ("nested field type", obj(lines={"type": "array", "items": obj(("q",), q=INT)}),
     obj(lines={"type": "array", "items": obj(("q",), q=STR)}), set(), "lines[].q"),
    ("map values widened", obj(m={"type": "object", "additionalProperties": INT}),
     obj(m={"type": "object", "additionalProperties": NUM}), B, "m{}"),
    ("format added", obj(t=STR), obj(t={"type": "string", "format": "date-time"}), F, "t"),
]  # fmt: skip


@pytest.mark.parametrize("mode", [m for m in Mode if m is not Mode.NONE])
@pytest.mark.parametrize(
    ("name", "old", "new", "accepted_by", "path"), CHANGES, ids=[c[0] for c in CHANGES]
)
def test_each_rule_in_each_mode(
    mode: Mode,
    name: str,
    old: dict[str, Any],
    new: dict[str, Any],
    accepted_by: set[Mode],
    path: str,
) -> None:
    breaks = check(mode, "JSON", new, [old])
    if mode in accepted_by:
        assert breaks == [], name
    else:
        assert breaks, f"{mode} should refuse: {name}"
        assert {b.path for b in breaks} == {path}, breaks
        assert all(b.version == 1 for b in breaks)


def test_every_mode_accepts_one_change_and_refuses_another() -> None:
    for mode in Mode:
        outcomes = {bool(check(mode, "JSON", new, [old])) for _, old, new, _, _ in CHANGES}
        assert outcomes == ({False} if mode is Mode.NONE else {False, True}), mode


V1 = obj((), note=STR)
V2 = obj(())  # note removed: a reader of v2 ignores it
V3 = obj((), note=INT)  # note back, as an integer: v3 cannot read v1's strings

TRANSITIVE = [
    (Mode.BACKWARD, [V1, V2], V3, False),
    (Mode.BACKWARD_TRANSITIVE, [V1, V2], V3, True),
    (Mode.FORWARD, [V1, V2], V3, False),
    (Mode.FORWARD_TRANSITIVE, [V1, V2], V3, True),
    (Mode.FULL, [V1, V2], V3, False),
    (Mode.FULL_TRANSITIVE, [V1, V2], V3, True),
    (Mode.NONE, [V1, V2], V3, False),
]


@pytest.mark.parametrize(("mode", "previous", "new", "refused"), TRANSITIVE)
def test_transitive_modes_check_every_earlier_version(
    mode: Mode, previous: list[dict[str, Any]], new: dict[str, Any], refused: bool
) -> None:
    breaks = check(mode, "JSON", new, previous, versions=[4, 7])
    assert bool(breaks) is refused
    if refused:
        assert {(b.path, b.version) for b in breaks} == {("note", 4)}
        assert "type changed from string to integer" in str(
            breaks[0]
        ) or "integer to string" in str(breaks[0])


def test_refs_into_defs_are_followed_and_the_reason_is_readable() -> None:
    def with_line(quantity: dict[str, Any]) -> dict[str, Any]:
        schema = obj(("lines",), lines={"type": "array", "items": {"$ref": "#/$defs/Line"}})
        schema["$defs"] = {"Line": obj(("quantity",), quantity=quantity)}
        return schema

    [found] = check("BACKWARD", "JSON", with_line(INT), [with_line(NUM)])
    assert str(found) == (
        "lines[].quantity: type narrowed from number to integer "
        "(the new schema reading version 1's data)"
    )


def test_unknown_mode_and_invalid_schema_say_so() -> None:
    with pytest.raises(ValueError, match="compatibility 'SIDEWAYS': expected one of BACKWARD"):
        check("SIDEWAYS", "JSON", BASE, [BASE])
    with pytest.raises(ValueError, match="invalid JSON Schema at properties/id: 7 is not of type"):
        check("BACKWARD", "JSON", obj(id=7), [BASE])
