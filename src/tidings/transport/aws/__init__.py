"""AWS as Tidings transports, on SQS FIFO queues per group (:mod:`.groups`,
:mod:`.subscription`): SNS FIFO topics fanning out to them (:mod:`.transport`), or an
EventBridge bus with rules routing to them (:mod:`.eventbridge`). Needs the ``aws``
extra (aiobotocore)."""

from tidings.transport.aws.eventbridge import EventBridgeTransport
from tidings.transport.aws.transport import SnsSqsTransport

__all__ = ["EventBridgeTransport", "SnsSqsTransport"]
