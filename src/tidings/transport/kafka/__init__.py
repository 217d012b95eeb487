"""Apache Kafka through librdkafka: ``kafka://host:port`` (see :mod:`.transport`)."""

from tidings.transport.kafka.transport import KafkaTransport

__all__ = ["KafkaTransport"]
