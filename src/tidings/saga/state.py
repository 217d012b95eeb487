"""A saga's state: the persisted state machine of one process manager instance.

Business code subclasses :class:`SagaState` with the fields it needs and writes its
transitions as plain functions of (message, state) that call :meth:`SagaState.send`,
:meth:`SagaState.expect` and :meth:`SagaState.finish`. Those only record what to do;
:mod:`tidings.saga.process` carries it out in the handler's unit of work. So a transition
is pure: tested without a broker or a store, and replayed safely after a crash (nothing
it decided happened unless its unit of work committed).

What the state says, at any time:

* ``step``: where it is (``"new"`` before the first transition);
* ``awaiting``: the reply types it waits for in that step (any other is ignored);
* ``sent``: the commands sent in that step (type and command id), ``attempt``: how many
  times the step was entered in a row (a compensation resent after a timeout counts up);
* ``deadline`` and ``timer``: when the step times out, and the durable timer armed for it;
* ``finished`` and ``outcome``: a finished saga ignores every reply and timer;
* ``history``: each transition, oldest first, and the last :data:`IGNORED_KEPT` ignored
  messages among them; ``ignored`` counts them all. A saga that keeps receiving
  duplicates or late replies (a finished one, say) so does not grow without bound.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pydantic import BaseModel, PrivateAttr

from tidings.messages import Command, Event, Message

IGNORED_KEPT = 10  # ignored messages kept in a saga's history; older ones are only counted


class Sent(BaseModel):
    type: str
    command_id: str | None = None


class Transition(BaseModel):
    """One line of a saga's history."""

    at: datetime
    message: str  # the type handled, or "timeout"
    step_from: str
    step_to: str
    note: str = ""
    ignored: bool = False  # a message that did not apply (only the latest few are kept)


@dataclasses.dataclass(frozen=True, slots=True)
class Expectation:
    step: str
    replies: tuple[type[Event], ...]
    within: float | None


class SagaState(BaseModel):
    """Base of a saga's state. Subclass it with defaults for every field you add."""

    id: str = ""
    step: str = "new"
    awaiting: list[str] = []
    sent: list[Sent] = []
    attempt: int = 0
    deadline: datetime | None = None
    timer: str | None = None
    finished: bool = False
    outcome: str | None = None
    correlation_id: str | None = None
    history: list[Transition] = []
    ignored: int = 0  # messages ignored so far (the history keeps the last IGNORED_KEPT)

    _outgoing: list[Message] = PrivateAttr(default_factory=list)
    _expectation: Expectation | None = PrivateAttr(default=None)
    # Set by the saga that runs the transition, if it has no @on_timeout: then a step
    # with a deadline is refused when it is declared, not when its timer fires.
    _without_timeout: str | None = PrivateAttr(default=None)

    # -- what a transition calls -------------------------------------------------------
    def command_id(self, name: str) -> str:
        """A command id that is the same each time this saga sends ``name``: a command
        resent (after a timeout) is then recognised by its receiver as the same one."""
        return f"{self.id}/{name}"

    def send(self, *messages: Message) -> None:
        """Publish these commands (or events) when the transition commits."""
        if self.finished:
            raise RuntimeError(f"saga {self.id} is finished ({self.outcome}); it sends nothing")
        self._outgoing.extend(messages)

    def expect(self, step: str, *replies: type[Event], within: float | None = None) -> None:
        """Move to ``step`` and wait for one of ``replies``; after ``within`` seconds
        without one, the saga's timeout transition runs (``@saga.on_timeout``)."""
        if not replies:
            raise ValueError(f"saga {self.id}: step {step!r} must await at least one reply type")
        if within is not None and within <= 0:
            raise ValueError(f"saga {self.id}: step {step!r} within={within} must be positive")
        if within is not None and self._without_timeout is not None:
            raise TypeError(
                f"saga {self._without_timeout}: step {step!r} has a deadline (within={within})"
                " but the saga has no @on_timeout transition to run when it passes;"
                " declare one, or drop within="
            )
        self._expectation = Expectation(step, replies, within)

    def finish(self, outcome: str, *events: Message) -> None:
        """End the saga with ``outcome``, publishing ``events``; later replies and timers
        are ignored."""
        self._outgoing.extend(events)
        self._expectation = Expectation(outcome, (), None)
        self.finished = True
        self.outcome = outcome

    # -- what the machinery reads -------------------------------------------------------
    def awaits(self, message_type: str) -> bool:
        return not self.finished and message_type in self.awaiting

    def has_effects(self) -> bool:
        """Whether the last transition decided anything (sent, expected or finished)."""
        return bool(self._outgoing) or self._expectation is not None

    def take_effects(self) -> tuple[list[Message], Expectation | None]:
        """What the last transition decided (and forget it)."""
        outgoing, expectation = self._outgoing, self._expectation
        self._outgoing, self._expectation = [], None
        return outgoing, expectation

    def note_ignored(self, line: Transition) -> None:
        """Add ``line`` (an ignored message) to the history, dropping the oldest ignored
        line beyond :data:`IGNORED_KEPT`; count it."""
        self.ignored += 1
        history = [*self.history, line.model_copy(update={"ignored": True})]
        ignored = [i for i, h in enumerate(history) if h.ignored]
        if len(ignored) > IGNORED_KEPT:
            del history[ignored[0]]
        self.history = history

    def summary(self) -> dict[str, Any]:
        """The state without its history (for a line of output)."""
        return self.model_dump(mode="json", exclude={"history"})


def sent_of(messages: list[Message]) -> list[Sent]:
    """The commands among ``messages``, as a state records them."""
    return [
        Sent(type=m.message_info.type, command_id=getattr(m, "command_id", None))
        for m in messages
        if isinstance(m, Command)
    ]


def render(name: str, state: SagaState) -> list[str]:
    """A saga's state and history as lines for people (``tidings saga show``)."""
    status = f"finished: {state.outcome}" if state.finished else f"in step {state.step}"
    lines = [f"saga {name} {state.id}: {status}"]
    if not state.finished:
        awaiting = ", ".join(state.awaiting) or "nothing"
        lines.append(f"  awaiting {awaiting} (attempt {state.attempt})")
        if state.deadline is not None:
            lines.append(f"  deadline {state.deadline.isoformat()}")
    if state.sent:
        sent = ", ".join(f"{s.type} {s.command_id or ''}".strip() for s in state.sent)
        lines.append(f"  last sent: {sent}")
    extra = {
        k: v
        for k, v in state.model_dump(mode="json").items()
        if k not in SagaState.model_fields and v not in (None, [], {}, "")
    }
    for key, value in extra.items():
        lines.append(f"  {key}: {value}")
    if state.ignored:
        kept = min(state.ignored, IGNORED_KEPT)
        lines.append(f"  ignored {state.ignored} message(s); the last {kept} are in the history")
    lines.append("history:")
    for line in state.history:
        moved = (
            line.step_to
            if line.step_from == line.step_to
            else f"{line.step_from} -> {line.step_to}"
        )
        note = f"  ({line.note})" if line.note else ""
        lines.append(
            f"  {line.at.isoformat(timespec='milliseconds')}  {line.message:<20} {moved}{note}"
        )
    return lines
