"""Consumer contracts: what each handler relies on, checked against what producers write.

A handler's expectation is the class it handles: the fields it declares are the fields
it reads (a field with a default is one it can do without). A producer's promise is the
schema of what it publishes: the class of a service in the same check
(``Service(publishes=[...])``), a locked schema file (``tidings schema lock``), or every
version registered under the subject in a schema registry. A contract holds when the
consumer's class can read data written with the producer's schema: the JSON Schema
reader/writer rules of :mod:`tidings.schemas.json_rules` (a field the reader requires and
the writer lacks, a type the reader cannot take, an enum value it does not know, ...).

Versions: a producer writing an older version than the consumer reads is checked as the
runtime reads it: through the consumer's upcasters (:mod:`tidings.upcasting`). If every
step is registered the contract holds by way of them (what a step returns is validated
at run time, not here); a missing step is a break that names it.

Pure functions of services and schemas; ``tidings contracts verify`` fetches the
producers' schemas and prints the table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tidings.messages import Message
from tidings.schemas import Break, SchemaType, json_schema, subject_for
from tidings.schemas.compatibility import reads
from tidings.service import Service
from tidings.upcasting import missing_step


@dataclasses.dataclass(frozen=True, slots=True)
class Promise:
    """One schema a producer writes under a subject: by a service (with the message
    version it writes), a lock file, or a registry version (version unknown)."""

    producer: str
    schema: dict[str, Any]
    version: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Contract:
    """The verdict on one consumer handler against one producer's promise."""

    subject: str
    message_type: str
    producer: str  # "" when nobody in the check produces it
    consumer: str  # service.handler
    breaks: tuple[Break, ...] = ()
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.breaks


def promises_in_code(services: Iterable[Service]) -> dict[str, list[Promise]]:
    """Subject -> what the services declare they publish, as schemas."""
    found: dict[str, list[Promise]] = {}
    for service in services:
        for message_type in service.publishes:
            found.setdefault(subject_for(message_type), []).append(
                Promise(service.name, json_schema(message_type), message_type.message_info.version)
            )
    return found


def verify(
    services: Iterable[Service], promises: Mapping[str, Sequence[Promise]]
) -> list[Contract]:
    """Every handler of ``services`` against every promise under its type's subject."""
    contracts = []
    for service in services:
        for spec in service.handlers.values():
            subject = subject_for(spec.message_type)
            consumer = f"{service.name}.{spec.name.rsplit('.', 1)[-1]}"
            found = promises.get(subject, ())
            if not found:
                contracts.append(
                    Contract(
                        subject,
                        spec.message_type.message_info.type,
                        "",
                        consumer,
                        note="no producer of it in this check",
                    )
                )
            for promise in found:
                contracts.append(_one(subject, spec.message_type, consumer, promise))
    return sorted(contracts, key=lambda c: (c.subject, c.consumer, c.producer))


def _one(
    subject: str, reader: type[Message], consumer: str, promise: Promise
) -> Contract:
    info = reader.message_info
    verdict = functools.partial(Contract, subject, info.type, promise.producer, consumer)
    written = promise.version
    if written is not None and written < info.version:
        step = missing_step(reader, written)
        if step is not None:
            why = f"writes v{written}, reads v{info.version}: no upcaster from v{step}"
            return verdict(breaks=(Break("", why),))
        return verdict(note=f"v{written} read through upcasters to v{info.version}")
    breaks = reads(SchemaType.JSON, json_schema(reader), promise.schema)
    return verdict(breaks=tuple(breaks))
