"""Orchestrated sagas: persisted process managers that send commands and await replies.

:mod:`tidings.saga.state` is the state machine (pure), :mod:`tidings.saga.process` runs
it in a service's units of work with durable deadlines (:mod:`tidings.timers`), and
:mod:`tidings.saga.commands` is how a receiving service answers each command once.
"""

from tidings.saga.commands import SagaCommand, answer, answered
from tidings.saga.process import Saga
from tidings.saga.state import SagaState, Transition

__all__ = ["Saga", "SagaCommand", "SagaState", "Transition", "answer", "answered"]
