"""Decoding a delivered record, with the registered schemas it may name.

The codec is pure: it decodes with the schemas at hand and raises
:class:`~tidings.codec.UnknownSchema` for an id it was not given. This is the step around
it that may do I/O, for the runtime:

* an id not at hand is fetched from the :class:`~tidings.formats.SchemaSource` (once:
  the source keeps it) and the record decoded again;
* an id the registry does not know raises ``UnknownSchema`` (the record is dead-lettered
  with that reason); a registry that cannot be asked raises
  :class:`~tidings.formats.SchemaUnavailable` (an infrastructure error: waited out); a
  schema it holds but that cannot be read is a :class:`~tidings.codec.DecodeError`;
* a record of a type the service does not handle never makes it fetch a schema, nor wait
  for the registry: its attributes alone are returned, and it is skipped;
* a record of a topic with a foreign decoder (``Service.foreign``) is that decoder's:
  its envelope, or None to skip it (a Debezium tombstone, say); a dead letter of such a
  topic replayed is read with its first topic's decoder (header ``replayed-from``).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping

from tidings import codec
from tidings.envelope import Envelope
from tidings.formats import SchemaSource
from tidings.records import Record
from tidings.reliability.deadletter import REPLAYED_FROM


async def decode(
    record: Record,
    schemas: SchemaSource | None,
    handled: Container[str],
    foreign: Mapping[str, Callable[[Record], Envelope | None]] | None = None,
) -> Envelope | None:
    """The envelope of ``record``; ``handled``: the CloudEvents types the service handles;
    ``foreign``: decoders by topic for records that are not CloudEvents."""
    if foreign:
        decoder = foreign.get(record.headers.get(REPLAYED_FROM, record.topic))
        if decoder is not None:
            return decoder(record)
    if schemas is None:
        return codec.decode(record)
    try:
        return codec.decode(record, schemas.known)
    except codec.UnknownSchema as missing:
        attributes = codec.decode(record, with_data=False)
        if attributes.type not in handled:
            return attributes
        try:
            found = await schemas.reader(missing.schema_id)
        except ValueError as exc:  # the registry holds it, but it cannot be read
            raise codec.DecodeError(str(exc)) from None
        if found is None:
            raise
        return codec.decode(record, schemas.known)
