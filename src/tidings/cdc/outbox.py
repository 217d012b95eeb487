"""The outbox through Debezium (``tidings run --relay debezium``): no polling relay.

A service's units of work write their outbox records into ``outbox_captured`` and delete
them in the same transaction (:mod:`tidings.store.postgres.captured`). A Debezium
PostgreSQL connector reads those inserts from the write-ahead log, and its outbox event
router (``io.debezium.transforms.outbox.EventRouter``, in ``debezium-connect-plugins``)
turns each into the record the codec made: the row's ``topic`` is the topic, its ``key``
the key (as a string), its ``value`` the value (bytes as they are), and each ``ce_*`` and
``content_type`` column the header of that name. So consumers on the polling relay's
records read these unchanged. One difference on the wire: an absent attribute (no
``traceparent``, say) travels as a header with a null value, which our Kafka transport
reads as absent (``transport/kafka/config.decode_headers``); the router's own ``id``
header and Debezium's ``__debezium.context.*`` headers are not written. Records go out in
the log's commit order (one task), so one key's events keep their order even when the
service runs several processes.

Rules:

* one connector per outbox table, so per database and schema, named by
  :func:`connector_name`; every service of that schema on this relay shares it, and its
  start registers it only if Connect has no such connector or another config;
* the start waits until the connector runs and its replication slot exists before the
  service handles anything: rows committed before the slot exists would never be read;
* rows the polling relay left in ``outbox`` (a service switched from it) are published
  once by it at start, then never again;
* it publishes to the Kafka broker Connect writes to (``scripts/services.d/connect.sh``:
  the ``kafka`` service), so the service's broker must be that one;
* ``tidings cdc drop NAME`` removes the connector and its slot; rows committed while no
  slot exists are lost, so drop it only once no service of that schema runs on this relay.

Crashes and duplicates: a unit of work that rolls back publishes nothing; one that
commits is published once Debezium reads it, even if the service died just after (the
slot keeps the log). Connect killed after publishing but before it saved its source
offsets (every second, ``offset.flush.interval.ms``) publishes those records again after
its restart, with the same ``ce_id``: consumers' inboxes drop them, as they drop the
polling relay's copies after a crash between publish and delete. While the connector is
down nothing is published and the slot keeps the log growing: ``tidings cdc status`` and
``tidings lag --connect`` report it.
"""

from __future__ import annotations

import hashlib
import re
import time
from urllib.parse import urlsplit

from tidings.cdc import connect


def connector_name(database: str, schema: str) -> str:
    """``outbox_<database>_<schema>`` in Connect's and a slot's alphabet, shortened with a
    digest when longer than a connector name may be."""
    name = re.sub(r"[^a-z0-9_]", "_", f"outbox_{database}_{schema}".lower())
    if len(name) > 41:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:32]}_{digest}"
    return name


def connector_config(name: str, database_url: str, table: str) -> dict[str, str]:
    """The Debezium connector publishing ``table`` (``schema.outbox_captured``) through the
    outbox event router, as the codec's records (see the module's rules)."""
    # Imported here: tidings.store.postgres needs psycopg, which importing this must not.
    from tidings.store.postgres.captured import HEADER_COLUMNS

    config = connect.connector_config(name, database_url, [table], topic_prefix=name)
    headers = ",".join(f"{column}:header:{header}" for header, column in HEADER_COLUMNS.items())
    config.update(
        {
            # The table holds no live row (deleted at once): nothing to snapshot, and the
            # deletes and updates are not events.
            "snapshot.mode": "no_data",
            "skipped.operations": "u,d,t",
            "tombstones.on.delete": "false",
            "binary.handling.mode": "bytes",
            # No __debezium.context.* headers on each record: the codec writes none.
            "extended.headers.enabled": "false",
            # The value is the codec's bytes, the key its string: no JSON around them.
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
            "header.converter": "org.apache.kafka.connect.storage.SimpleHeaderConverter",
            "transforms": "outbox,dropid",
            "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
            "transforms.outbox.table.field.event.id": "ce_id",
            "transforms.outbox.table.field.event.key": "key",
            "transforms.outbox.table.field.event.payload": "value",
            "transforms.outbox.route.by.field": "topic",
            "transforms.outbox.route.topic.replacement": "${routedByValue}",
            "transforms.outbox.table.fields.additional.placement": headers,
            "transforms.outbox.table.expand.json.payload": "false",
            "transforms.outbox.route.tombstone.on.empty.payload": "false",
            # The router always adds the event id as header "id"; the codec has ce_id.
            "transforms.dropid.type": "org.apache.kafka.connect.transforms.DropHeaders",
            "transforms.dropid.headers": "id",
        }
    )
    for key in [k for k in config if k.startswith("transforms.route.")]:
        del config[key]  # the change topics' router of connect.connector_config
    return config


def ensure(connect_url: str, name: str, database_url: str, table: str) -> bool:
    """Register the connector unless Connect has it with this config (registering again
    would restart it); True if it was (re)registered."""
    config = connector_config(name, database_url, table)
    current = connect.config_of(connect_url, name)
    if current is not None and all(current.get(k) == v for k, v in config.items()):
        return False
    connect.preflight(database_url, [table])
    connect.put_config(connect_url, name, config)
    return True


def wait_slot(database_url: str, name: str, timeout: float) -> None:
    """Wait until the connector's replication slot exists: from then on, every commit is
    kept for it. Creating one waits for the transactions open at that moment to end."""
    import psycopg  # the postgres extra; the store that needs this relay has it

    slot = connect.slot_name(name)
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            query = "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s"
            if conn.execute(query, (slot,)).fetchone():
                return
            time.sleep(0.3)
    raise connect.ConnectError(
        f"replication slot {slot} not created {timeout:.0f}s after registering {name}: a "
        "transaction open on the database holds it back (see pg_stat_activity)"
    )


def plain_url(url: str) -> str:
    """The database URL without its query (search_path options are no concern of Debezium,
    which names the table with its schema)."""
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl()
