"""Settings of the Kafka transport: URL options, librdkafka configurations, record mapping.

URL options (query string; durations in milliseconds, as Kafka names them):

* ``session_timeout_ms`` (10000) - a member that stops heartbeating loses its partitions
  after this long (the broker accepts 6000 to 300000 by default);
* ``heartbeat_interval_ms`` (1000), ``max_poll_interval_ms`` (300000: the longest a member
  may spend between two ``fetch`` calls before the group hands its partitions on);
* ``partitions`` (3) and ``replication_factor`` (-1: the broker's default) of the topics
  the transport creates, explicitly or on first use;
* ``delivery_timeout_ms`` (120000) - how long ``publish`` keeps retrying while the broker
  is away before it raises (a restart of a few seconds is ridden out);
* ``connect_timeout_ms`` (10000) - how long ``connect`` waits for the first answer;
* ``linger_ms`` (1) - how long the producer waits to fill a batch (the outbox relay
  already hands it a batch, so a longer wait only adds to every hop's latency);
* ``max_record_bytes`` - defaults to what the broker accepts (``message.max.bytes``);
* ``rdkafka.<name>`` - passed to every librdkafka client as ``<name>``,
  e.g. ``kafka://broker:9093?rdkafka.ssl.endpoint.identification.algorithm=none``.

TLS and SASL (:mod:`tidings.credentials`): ``kafka://USER@broker:9192?tls_ca=ca.pem&
password_file=PATH`` connects with SASL_SSL and SCRAM-SHA-512 (``sasl_mechanism`` to
change it); without a user, ``tls_ca`` / ``tls=1`` alone is SSL.

Several bootstrap brokers: ``kafka://host1:9092,host2:9092``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from confluent_kafka import KafkaError, Message
from confluent_kafka._types import HeadersType

from tidings.credentials import Credentials, split_credentials
from tidings.records import Record
from tidings.transport.contract import DEFAULT_PARTITIONS
from tidings.transport.errors import InvalidBrokerURL, NotAuthorized, TransportError
from tidings.transport.options import url_options

log = logging.getLogger("tidings.transport.kafka")


class _ClientLog:
    """Where librdkafka's log lines go: a logger, one level down.

    Its errors (a refused connection during a broker restart, every 100 ms) also reach
    the error callback, which the transport turns into rate-limited warnings; the log
    lines themselves are detail, for whoever enables INFO on this logger.
    """

    logger = logging.getLogger("tidings.transport.kafka.librdkafka")

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self.logger.log(max(logging.DEBUG, min(level, logging.WARNING) - 10), msg, *args)


client_log = _ClientLog()

# Room for the record batch header (61 bytes), the record's own framing and its key within
# the broker's message.max.bytes, which bounds a whole batch of one record.
FRAMING_BYTES = 512
BROKER_DEFAULT_MESSAGE_MAX_BYTES = 1048588


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    url: str  # scheme and brokers only: what error messages name
    bootstrap: str
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 300_000
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = -1
    delivery_timeout_ms: int = 120_000
    connect_timeout_ms: int = 10_000
    linger_ms: int = 1
    max_record_bytes: int | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)
    # librdkafka's TLS and SASL settings; never in a repr (it holds the password)
    security: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    username: str | None = None

    @classmethod
    def from_url(cls, url: str) -> KafkaSettings:
        credentials, url = split_credentials(url)
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise InvalidBrokerURL(f"{url!r}: give host and port, e.g. kafka://127.0.0.1:9092")
        numeric = {f.name for f in dataclasses.fields(cls)} - {"url", "bootstrap", "extra"}
        options = url_options(url, dict.fromkeys(numeric, int), passthrough="rdkafka.")
        extra = {
            name.removeprefix("rdkafka."): options.pop(name)
            for name in [name for name in options if name.startswith("rdkafka.")]
        }
        settings = cls(
            f"kafka://{credentials.username + '@' if credentials.username else ''}{parts.netloc}",
            parts.netloc, extra=extra, security=security_config(credentials),
            username=credentials.username, **options,
        )  # fmt: skip
        if not 0 < settings.heartbeat_interval_ms * 3 <= settings.session_timeout_ms:
            raise InvalidBrokerURL(f"{url!r}: heartbeat_interval_ms must be at most a third of"
                                   " session_timeout_ms")  # fmt: skip
        return settings

    def common(self, client_id: str, on_error: Callable[[KafkaError], None]) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": client_id,
            "logger": client_log,
            "error_cb": on_error,
            **self.security,
        }

    def producer(
        self, on_error: Callable[[KafkaError], None], message_max_bytes: int
    ) -> dict[str, Any]:
        return {
            **self.common("tidings-producer", on_error),
            # Durable when publish returns, and no duplicates or reordering from retries.
            "acks": "all",
            "enable.idempotence": True,
            # Java's partitioner (murmur2 of the key), so that a key lands in the same
            # partition whether Tidings, Kafka Connect or a Java service produced it.
            "partitioner": "murmur2_random",
            "linger.ms": self.linger_ms,
            "message.timeout.ms": self.delivery_timeout_ms,
            "message.max.bytes": message_max_bytes,
            **self.extra,
        }

    def consumer(
        self, group: str, from_beginning: bool, on_error: Callable[[KafkaError], None]
    ) -> dict[str, Any]:
        return {
            **self.common(f"tidings-{group}", on_error),
            "group.id": group,
            # Offsets are committed by ack only (see kafka_subscription).
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            # Round robin over every (topic, partition) the members read, so each topic's
            # partitions are spread over the members. cooperative-sticky (incremental
            # rebalancing) balances only the count of partitions: with a service reading
            # several topics, whole topics landed on one member (all six of inventory's
            # shop.orders on one of two processes, the other holding quiet topics), so
            # a process added took no share of the work. The price is an eager rebalance:
            # every member gives up all its partitions when one joins or leaves.
            "partition.assignment.strategy": "roundrobin",
            "enable.partition.eof": False,
            **self.extra,
        }

    def reader(self, on_error: Callable[[KafkaError], None]) -> dict[str, Any]:
        # librdkafka wants a group.id even for a consumer that only assign()s; it never
        # joins or commits, so the group is never created on the broker.
        return {
            **self.common("tidings-reader", on_error),
            "group.id": "tidings-reader",  # kafka_admin.READER_GROUP
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # read() asks for the end offsets before each read, and the broker answers
            # requests of one connection in order: behind a fetch long-polling for new
            # records (500 ms by default) the answer waited half a second per read. A
            # reader only reads what is already stored, so it never needs the long poll.
            "fetch.wait.max.ms": 10,
            **self.extra,
        }


def security_config(credentials: Credentials) -> dict[str, str]:
    """librdkafka's settings for the URL's TLS and SASL (empty: plaintext)."""
    config: dict[str, str] = {}
    if credentials.username is not None:
        config["security.protocol"] = "SASL_SSL" if credentials.tls else "SASL_PLAINTEXT"
        config["sasl.mechanism"] = credentials.sasl_mechanism
        config["sasl.username"] = credentials.username
        if credentials.password is not None:
            config["sasl.password"] = credentials.password
    elif credentials.tls:
        config["security.protocol"] = "SSL"
    if credentials.tls_ca:
        config["ssl.ca.location"] = credentials.tls_ca
    if credentials.tls_cert and credentials.tls_key:
        config["ssl.certificate.location"] = credentials.tls_cert
        config["ssl.key.location"] = credentials.tls_key
    return config


def to_record(message: Message) -> Record:
    """A consumed Kafka message as a Record (key and headers decoded as UTF-8)."""
    key = message.key()
    raw = message.headers()
    try:
        # The common case, fast (this runs for every record consumed): list of bytes values.
        pairs = cast("list[tuple[str, bytes]]", raw)  # what librdkafka hands back
        headers = {name: value.decode() for name, value in pairs} if pairs else {}
        text_key = None if key is None else key.decode()
    except (AttributeError, ValueError, TypeError):  # null headers, not UTF-8 (other producers)
        headers = decode_headers(raw)
        text_key = None if key is None else key.decode("utf-8", "replace")
    return Record(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        text_key,
        message.value() or b"",
        headers,
        message.timestamp()[1] / 1000.0,
    )


def decode_headers(raw: HeadersType | None) -> dict[str, str]:
    """Headers as text, whatever another producer wrote (not UTF-8 is replaced). A header
    without a value is left out: Debezium's outbox router (``--relay debezium``) writes an
    absent CloudEvents attribute as a header with a null value, which means "none"."""
    headers: dict[str, str] = {}
    for name, value in (raw if isinstance(raw, list) else raw.items()) if raw else ():
        if isinstance(value, bytes):
            headers[name] = value.decode("utf-8", "replace")
        elif value is not None:
            headers[name] = value
    return headers


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError inside a KafkaException, if there is one."""
    arg = exc.args[0] if exc.args else None
    return arg if isinstance(arg, KafkaError) else None


def describe(exc: BaseException) -> str:
    err = kafka_error(exc)
    return err.str() if err is not None else str(exc)


class KafkaTransportError(TransportError):
    """A broker refused or failed a request; the message says which and why."""


# What each authorization error code means as an ACL (resource kind, operation).
AUTHORIZATION_ERRORS = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
}


def not_authorized(
    url: str, user: str | None, operation: str, resource: str, name: str
) -> NotAuthorized:
    """One line naming the user (the service), the resource and the missing ACL."""
    user = user or "ANONYMOUS"
    return NotAuthorized(
        f"{url}: user {user} is refused {operation} on {resource} {name!r}: the ACL"
        f" 'User:{user} {operation} {resource}:{name}' is missing (the service's code does"
        f" not declare it: see tidings acl plan / tidings acl check)"
    )
