"""AWS SNS + SQS as a Tidings transport (:mod:`.transport`): FIFO topics fanning out to a
FIFO queue per group. Needs the ``aws`` extra (aiobotocore)."""

from tidings.transport.aws.transport import SnsSqsTransport

__all__ = ["SnsSqsTransport"]
