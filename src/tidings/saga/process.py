"""Orchestrated sagas: a process manager per business key, persisted, with deadlines.

    saga = Saga(service, "order", OrderSaga)

    @saga.starts
    def placed(event: OrderPlaced, s: OrderSaga) -> None:
        s.send(ReserveInventory(command_id=s.command_id("reserve"), ...))
        s.expect("reserving", InventoryReserved, InventoryRejected, within=30)

    @saga.on
    def reserved(event: InventoryReserved, s: OrderSaga) -> None: ...

    @saga.on_timeout
    def timed_out(s: OrderSaga) -> None: ...   # s.step says which step timed out

The rules:

* One instance per key: the handled message's declared key (``order_id``) names it. Its
  state (:class:`~tidings.saga.state.SagaState`) is a document of the service's typed
  state (collection ``_saga.<name>``), written with an expected version.
* A transition runs in the unit of work of the message that triggers it: the new state,
  the commands and events it sends (outbox), its timer and the inbox mark commit together
  or not at all. A crash before the commit redelivers the message and the transition
  runs again from the old state; after it, nothing is lost or done twice.
* Two messages for one instance at once (a reply and its timeout, two members during a
  rebalance): one commits, the other's stale version raises ``ConcurrencyConflict``, and
  the runtime runs it again on the new state, where it usually no longer applies.
* A start transition that decides nothing (sends nothing, expects nothing, does not
  finish) declines: no instance is stored, and the store is not even read (a new group
  on a broker that keeps history reads every old message: declining them costs nothing).
  A start transition must therefore decide from the message alone.
* What does not apply is ignored, never raised, and noted in the history: a reply the
  current step does not await (late, duplicated, or for an earlier step), anything for a
  finished saga, a start for an instance that exists, and a timer that is not the one the
  current step armed (it fired late, or twice). The history keeps the last
  ``IGNORED_KEPT`` (10) of them and the state counts them all (``ignored``), so duplicates
  without end cost a write each but no growth. A reply for an instance that does not
  exist is dropped with a log line (there is no state to note it in).
* Each ``expect(..., within=)`` arms a durable timer (:mod:`tidings.timers`) and the next
  transition disarms it; the timer loop of the runtime fires it if no reply came in time.
  A saga without ``@saga.on_timeout`` refuses such a step where it is declared: the
  ``expect`` call raises, so the transition fails before anything commits (the message is
  retried and dead-lettered as any failing handler's), not later when the timer fires.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from tidings.envelope import utc_now
from tidings.messages import Message, annotated_types
from tidings.saga.state import SagaState, Transition, sent_of
from tidings.service import Collection, Context, Service
from tidings.timers import Timer

S = TypeVar("S", bound=SagaState)
Step = Callable[[Any, Any], None]
Timeout = Callable[[Any], None]

log = logging.getLogger("tidings.saga")

TIMEOUT = "timeout"


class Saga(Generic[S]):
    """The process manager ``name`` of ``service``, with state of type ``state``."""

    def __init__(self, service: Service, name: str, state: type[S]) -> None:
        if not (isinstance(state, type) and issubclass(state, SagaState)):
            raise TypeError(f"saga {name}: {state!r} is not a SagaState subclass")
        if name in service.sagas:
            raise ValueError(f"{service.name}: a saga named {name!r} is declared already")
        self.service = service
        self.name = name
        self.state = state
        self.collection: Collection[S] = service.collection(f"_saga.{name}", state)
        self.timer_kind = f"saga.{name}"
        self.steps: dict[str, tuple[Step, bool]] = {}  # by CloudEvents type: (fn, starts)
        self.timeout: Timeout | None = None
        service.sagas[name] = self
        service.on_timer(self.timer_kind)(self._fired)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, service={self.service.name!r})"

    # -- declaring -------------------------------------------------------------------
    def starts(self, fn: Step) -> Step:
        """The transition that creates an instance (for the annotated message type)."""
        return self._register(fn, starts=True)

    def on(self, fn: Step) -> Step:
        """A transition of an existing instance, on a reply (the annotated type(s))."""
        return self._register(fn, starts=False)

    def on_timeout(self, fn: Timeout) -> Timeout:
        """The transition run when a step's deadline passes without an awaited reply."""
        if self.timeout is not None:
            raise ValueError(f"saga {self.name} has a timeout transition already")
        self.timeout = fn
        return fn

    def _register(self, fn: Step, *, starts: bool) -> Step:
        where = f"saga {self.name}: {getattr(fn, '__qualname__', repr(fn))}"
        params = list(inspect.signature(fn).parameters)
        if len(params) != 2:
            raise TypeError(f"{where} takes (message, state)")
        for message_type in annotated_types(fn, params[0], where):
            if message_type.message_info.key is None:
                raise TypeError(
                    f"{where}: {message_type.__name__} declares no key to find the saga by"
                )
            self.steps[message_type.message_info.type] = (fn, starts)

            async def handle(message: Message, ctx: Context) -> None:
                await self.deliver(message, ctx)

            handle.__qualname__ = f"saga.{self.name}.{getattr(fn, '__name__', 'step')}"
            self.service.on(message_type)(handle)
        return fn

    # -- running ---------------------------------------------------------------------
    async def get(self, ctx: Context, key: str) -> S | None:
        """The state of instance ``key``, if it exists."""
        return await ctx.get(self.collection, key)

    async def deliver(self, message: Message, ctx: Context) -> str:
        """Run the transition for ``message`` (see the module's rules); what happened:
        ``"applied"``, or why it was ignored."""
        type_ = message.message_info.type
        fn, starts = self.steps[type_]
        key = message.message_key()
        assert key is not None
        if starts:  # a start declining on a fresh state declines whatever is stored: no read
            probe = self.state(id=key)
            self._run(fn, message, probe)
            if not probe.has_effects():
                return "not started"
        found = await ctx.get_versioned(self.collection, key)
        if found is None:
            if not starts:
                log.info("saga %s: %s for unknown instance %s ignored", self.name, type_, key)
                return "unknown instance"
            state = self.state(id=key, correlation_id=ctx.correlation_id)
            version = 0
        else:
            state, version = found.value, found.version
            why = _ignored(state, type_, starts)
            if why is not None:
                await self._note(ctx, state, version, type_, why)
                return why
        self._run(fn, message, state)
        await self._commit(ctx, state, version, type_)
        return "applied"

    def _run(self, fn: Step, message: Message, state: S) -> None:
        """Run a transition; a step it declares with a deadline needs ``@on_timeout``."""
        state._without_timeout = self.name if self.timeout is None else None
        fn(message, state)

    async def _fired(self, timer: Timer, ctx: Context) -> None:
        found = await ctx.get_versioned(self.collection, timer.name)
        if found is None:
            log.info("saga %s: timer for unknown instance %s ignored", self.name, timer.name)
            return
        state, version = found.value, found.version
        if state.finished or state.timer != timer.key:
            why = _ignored(state, TIMEOUT, starts=False) or f"not the timer of step {state.step}"
            await self._note(ctx, state, version, TIMEOUT, why)
            return
        if self.timeout is None:
            raise LookupError(f"saga {self.name}: step {state.step} timed out, no @on_timeout")
        state.timer = None  # this one has fired (deleted by the timer loop)
        self.timeout(state)
        await self._commit(ctx, state, version, TIMEOUT)

    async def _note(self, ctx: Context, state: S, version: int, message: str, note: str) -> None:
        log.info("saga %s %s: %s %s", self.name, state.id, message, note)
        state.note_ignored(_line(message, state.step, state.step, note))
        await ctx.put(self.collection, state.id, state, expected_version=version)

    async def _commit(self, ctx: Context, state: S, version: int, message: str) -> None:
        outgoing, expectation = state.take_effects()
        before = state.step
        for item in outgoing:
            ctx.publish(item)
        if expectation is not None:
            if state.timer is not None:
                await ctx.cancel_timer(state.timer)
            state.attempt = state.attempt + 1 if expectation.step == state.step else 1
            state.step = expectation.step
            state.awaiting = [r.message_info.type for r in expectation.replies]
            state.sent = sent_of(outgoing)
            state.timer, state.deadline = None, None
            if expectation.within is not None:
                timer = await ctx.schedule(
                    self.timer_kind,
                    state.id,
                    after=expectation.within,
                    data={"step": state.step, "attempt": state.attempt},
                )
                state.timer, state.deadline = timer.key, timer.due
        note = ", ".join(type(m).__name__ for m in outgoing)
        line = _line(message, before, state.step, f"sent {note}" if note else "")
        state.history = [*state.history, line]
        await ctx.put(self.collection, state.id, state, expected_version=version)


def _ignored(state: SagaState, type_: str, starts: bool) -> str | None:
    if state.finished:
        return f"ignored: finished ({state.outcome})"
    if starts:
        return "ignored: started already"
    if type_ == TIMEOUT:
        return "ignored: not the timer of step " + state.step
    if not state.awaits(type_):
        return f"ignored: not awaited in step {state.step}"
    return None


def _line(message: str, before: str, after: str, note: str) -> Transition:
    return Transition(at=utc_now(), message=message, step_from=before, step_to=after, note=note)
