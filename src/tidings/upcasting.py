"""Reading old versions of an event: upcasters, chained v1 -> v2 -> v3.

A message class declares its schema version (``class OrderPlaced(Event, ..., version=3)``)
and every envelope carries the version it was written with (``Envelope.version``). When
a consumer of version 3 meets a version 1 event still in the log, it does not guess:

    @upcaster(OrderPlaced, from_version=1)
    def split_name(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first_name": first, "last_name": last}

    @upcaster(OrderPlaced, from_version=2)
    def add_currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

Rules:

* An upcaster takes the JSON data (``Envelope.data``) of ``from_version`` and returns the
  data of ``from_version + 1``. There is one per step; a second for the same step, a step
  outside ``1 .. version - 1`` of the class, or a sync/async mix-up fails at import.
* On consume (:func:`upcast`, called by the runtime before validation), an event of
  version ``v`` below the handler's class version runs the steps ``v, v+1, ...`` up to
  the class version, then is validated as usual.
* A missing step raises :class:`NoUpcastPath`: the event is dead-lettered (kind
  ``invalid``) with a reason naming the step to write. Nothing is guessed.
* An event of a newer version than the handler, or without a version (not written by
  Tidings), is validated as it is: events are tolerant readers (unknown fields are
  ignored), which is exactly what a FORWARD or FULL compatibility rule makes safe.
* Upcasters are pure functions of the data: they run again on every redelivery and
  replay, so they must not do I/O or depend on the time.

The steps are kept per class (a weak mapping, so a class that goes away takes its steps
with it); nothing is registered anywhere else.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from tidings.messages import Message

Data = dict[str, Any]
Step = Callable[[Data], Data]
S = TypeVar("S", bound=Step)

_steps: weakref.WeakKeyDictionary[type[Message], dict[int, Step]] = weakref.WeakKeyDictionary()


class NoUpcastPath(ValueError):
    """An event's version cannot be brought to the version its handler reads."""


def upcaster(message_type: type[Message], *, from_version: int) -> Callable[[S], S]:
    """Register the decorated function as the step from ``from_version`` to the next."""
    name = message_type.__name__
    target = message_type.message_info.version
    if not isinstance(from_version, int) or not 1 <= from_version < target:
        raise ValueError(
            f"@upcaster({name}, from_version={from_version!r}): {name} is at version "
            f"{target}, so a step starts at a version from 1 to {target - 1}"
        )

    def register(fn: S) -> S:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"upcaster {fn.__qualname__}: must be a plain def (no I/O), not async")
        steps = _steps.setdefault(message_type, {})
        known = steps.get(from_version)
        if known is not None:
            raise ValueError(
                f"{name} already has an upcaster from version {from_version}: "
                f"{getattr(known, '__qualname__', known)}"
            )
        steps[from_version] = fn
        return fn

    return register


def missing_step(message_type: type[Message], version: int) -> int | None:
    """The first step missing to read ``version`` as the class's version, or None."""
    steps = _steps.get(message_type, {})
    return next((v for v in range(version, message_type.message_info.version) if v not in steps), None)


def upcast(message_type: type[Message], data: Data, version: int | None) -> Data:
    """``data`` written as ``version`` of ``message_type``, brought to the class's version.

    Returns ``data`` itself when there is nothing to do (same, newer or unknown version);
    raises :class:`NoUpcastPath` naming the first missing step.
    """
    target = message_type.message_info.version
    if version is None or version >= target:
        return data
    name = message_type.__name__
    missing = missing_step(message_type, version)
    if missing is not None:
        raise NoUpcastPath(
            f"{name} v{version} cannot be read as v{target}: no upcaster from v{missing} "
            f"(write one: @upcaster({name}, from_version={missing}))"
        )
    steps = _steps[message_type]
    for step in range(version, target):
        fn = steps[step]
        try:
            data = fn(dict(data))  # a copy: a step that edits in place leaves the envelope be
        except Exception as exc:  # a bug in the step, or data it did not expect
            raise NoUpcastPath(f"{name}: the upcaster from v{step} failed: {exc!r}") from exc
        if not isinstance(data, dict):
            raise NoUpcastPath(
                f"{name}: the upcaster from v{step} returned {type(data).__name__}, not a dict"
            )
    return data
