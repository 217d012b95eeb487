"""What a service does with a registry at start: register what it publishes, check what
it handles, and refuse to start with one message if either breaks a subject's rule.

* Each type in ``service.publishes`` is checked, here, against its subject's versions
  under the subject's rule (so the message names the field that breaks it, whichever
  registry is used), then registered; its id is cached in the client.
* Each type a handler takes must read what its subject's producers registered: the
  local class, as a reader, against the latest version, or every version when the rule
  is transitive (a topic keeps old events). A subject nobody registered yet is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from tidings.messages import Message
from tidings.registry.client import RegistryClient, RegistryError
from tidings.schemas import (
    Break,
    Mode,
    SchemaType,
    canonical_text,
    check,
    schema_text,
    subject_for,
)
from tidings.service import Service

log = logging.getLogger("tidings.registry")


class SchemaRejected(ValueError):
    """A service's schema breaks its subject's rule; the message names subject, rule, field."""


@dataclasses.dataclass
class ServiceSchemas:
    """What start-up found: the id of each published type's schema, of ``schema_type``."""

    ids: dict[type[Message], int]
    schema_type: SchemaType


def _rejected(subject: str, mode: Mode, role: str, breaks: list[Break]) -> SchemaRejected:
    detail = "; ".join(str(b) for b in breaks)
    return SchemaRejected(f"schema of subject {subject} breaks its rule {mode} ({role}): {detail}")


async def ensure_schemas(
    service: Service, client: RegistryClient, schema_type: SchemaType = SchemaType.JSON
) -> ServiceSchemas:
    """Register ``service``'s published schemas and check its handled ones (see above)."""
    ids: dict[type[Message], int] = {}
    for message_type in service.publishes:
        subject = subject_for(message_type)
        text = schema_text(message_type, schema_type)
        mode = await client.mode(subject)
        previous = [v for v in await client.versions(subject) if v[1] is schema_type]
        if any(canonical_text(json.loads(v[2])) == text for v in previous):
            previous = []  # registered already: the registry returns its id unchecked
        breaks = check(mode, schema_type, text, [v[2] for v in previous], [v[0] for v in previous])
        if breaks:
            raise _rejected(
                subject, mode, f"{service.name} publishes {message_type.__name__}", breaks
            )
        try:
            ids[message_type] = await client.register(subject, schema_type, text)
        except RegistryError as exc:
            if exc.status == 409:  # the registry's own checker refused it
                raise SchemaRejected(f"subject {subject} ({mode}): {exc.message}") from None
            raise
    handled = {spec.message_type for spec in service.handlers.values()}
    for message_type in sorted(handled, key=lambda t: t.__name__):
        if message_type.message_info.topic is None:
            continue
        subject = subject_for(message_type)
        registered = [v for v in await client.versions(subject) if v[1] is schema_type]
        if not registered:
            log.info("%s: no schema registered under %s yet", service.name, subject)
            continue
        mode = await client.mode(subject)
        if mode is Mode.NONE:
            continue
        reader = Mode.BACKWARD_TRANSITIVE if mode.transitive else Mode.BACKWARD
        text = schema_text(message_type, schema_type)
        breaks = check(
            reader, schema_type, text, [v[2] for v in registered], [v[0] for v in registered]
        )
        if breaks:
            raise _rejected(
                subject, mode, f"{service.name} handles {message_type.__name__}", breaks
            )
    return ServiceSchemas(ids, schema_type)
