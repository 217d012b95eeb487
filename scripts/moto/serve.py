"""Run moto's server (``moto_server``) with a faster clock; scripts/services starts it.

moto computes every attribute of an SQS queue (its approximate message counts among
them) several times per SendMessage, and stamps each message with ``unix_time()``, which
builds two datetimes per call: a FIFO queue holding a few hundred messages then takes
~50 ms per message, and publishing slows down as queues fill. ``unix_time()`` without an
argument is the current time, which ``time.time()`` gives at a fraction of the cost, so
it is replaced before moto's service modules import it (they import it by name). With a
datetime argument the original runs. ``camelcase_to_underscores`` (a regex per queue
attribute, per call) is a pure function and gets a cache. Nothing else is changed.
"""

from __future__ import annotations

import datetime
import functools
import time

import moto.core.utils as utils

_unix_time = utils.unix_time


def unix_time(dt: datetime.datetime | None = None) -> float:
    return time.time() if dt is None else _unix_time(dt)


def unix_time_millis(dt: datetime.datetime | None = None) -> float:
    return unix_time(dt) * 1000.0


utils.unix_time = unix_time  # type: ignore[assignment]
utils.unix_time_millis = unix_time_millis  # type: ignore[assignment]
utils.camelcase_to_underscores = functools.cache(utils.camelcase_to_underscores)

if __name__ == "__main__":
    from moto.server import main

    main()
