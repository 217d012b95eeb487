"""A service's schemas on the wire: what it publishes with, and what it reads by id.

:class:`RegistrySchemas` is the :class:`~tidings.formats.SchemaSource` a runtime holds
when it runs with a registry (``tidings run --registry URL [--schema-format avro]``):

* **Publishing** uses the ids :func:`~tidings.registry.startup.ensure_schemas` registered
  at start, one per type in ``Service(publishes=...)``, compiled then. :meth:`writer` never
  calls the registry, so an outage while running costs no event: records are encoded into
  the outbox as usual and the relay publishes them. A type the service did not declare has
  no schema and goes out as plain CloudEvents JSON, as without a registry.
* **Consuming** reads a record's schema id (Avro framing or ``dataschema``) and
  :meth:`reader` fetches that schema once, then keeps it: schemas under an id never
  change. An id the registry answers 404 for is None (the record is dead-lettered, with
  that reason); an unreachable registry, or one answering 5xx, raises
  :class:`~tidings.registry.client.RegistryUnavailable`, an infrastructure error the
  consume loop waits out, so no record is dead-lettered for an outage. Schemas already
  known are read without the registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tidings.formats import RegisteredSchema
from tidings.registry.client import RegistryClient, RegistryError, RegistryUnavailable
from tidings.registry.startup import ensure_schemas
from tidings.schemas import SchemaType, schema_text
from tidings.service import Service


class RegistrySchemas:
    """The schemas of one service at one registry (see the module docstring)."""

    def __init__(self, client: RegistryClient, writers: Mapping[str, RegisteredSchema]) -> None:
        self.client = client
        self.writers = dict(writers)  # CloudEvents type -> the schema it is published with
        self.known: dict[int, RegisteredSchema] = {w.id: w for w in writers.values()}
        self.unknown = 0  # records whose id the registry did not know (dead-lettered)
        self._fetching: dict[int, asyncio.Future[RegisteredSchema | None]] = {}

    @classmethod
    async def start(
        cls,
        service: Service,
        client: RegistryClient,
        schema_type: SchemaType = SchemaType.JSON,
    ) -> RegistrySchemas:
        """Register and check ``service``'s schemas (``ensure_schemas``); keep their ids."""
        found = await ensure_schemas(service, client, schema_type)
        writers = {
            message_type.message_info.type: RegisteredSchema(
                schema_id,
                found.schema_type.value,
                schema_text(message_type, found.schema_type),
                schema_url(client.url, schema_id),
            ).compile()
            for message_type, schema_id in found.ids.items()
        }
        return cls(client, writers)

    @property
    def url(self) -> str:
        return self.client.url

    def writer(self, event_type: str) -> RegisteredSchema | None:
        return self.writers.get(event_type)

    async def reader(self, schema_id: int) -> RegisteredSchema | None:
        found = self.known.get(schema_id)
        if found is not None:
            return found
        pending = self._fetching.get(schema_id)
        if pending is None:  # one request per id, however many partitions wait for it
            pending = asyncio.ensure_future(self._fetch(schema_id))
            self._fetching[schema_id] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(schema_id, None))
        return await asyncio.shield(pending)

    async def _fetch(self, schema_id: int) -> RegisteredSchema | None:
        try:
            got = await self.client.schema(schema_id)
        except RegistryUnavailable:
            raise
        except RegistryError as exc:
            # Up but not answering as a registry (5xx, or a 404 without Confluent's
            # "schema not found" code: a wrong URL?): wait, do not dead-letter for it.
            raise RegistryUnavailable(
                exc.status, exc.code, f"schema registry {self.client.url}: {exc.message}"
            ) from None
        if got is None:
            self.unknown += 1
            return None
        schema_type, text = got
        schema = RegisteredSchema(
            schema_id, schema_type.value, text, schema_url(self.client.url, schema_id)
        )
        try:
            schema.compile()
        except Exception as exc:  # a schema fastavro or jsonschema cannot take
            raise ValueError(
                f"schema id {schema_id} at {self.client.url} cannot be read: {exc}"
            ) from None
        self.known[schema_id] = schema
        return schema


def schema_url(registry: str, schema_id: int) -> str:
    """Where ``registry`` serves schema ``schema_id``: an envelope's ``dataschema``."""
    return f"{registry.rstrip('/')}/schemas/ids/{schema_id}"
