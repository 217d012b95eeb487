"""RabbitMQ as a Tidings transport (:mod:`.transport`): exchanges, quorum queues with a
single active consumer, publisher confirms. Needs the ``rabbitmq`` extra (aio-pika)."""

from tidings.transport.rabbitmq.transport import RabbitMQTransport

__all__ = ["RabbitMQTransport"]
