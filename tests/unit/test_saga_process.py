"""The saga machinery on its own (a saga declared here, real SQLite stores through TestApp):
a deadline needs a timeout transition, and ignored messages do not grow the history."""

from __future__ import annotations

import pytest

from tidings import Command, Event, Service
from tidings.saga import Saga, SagaState
from tidings.saga.state import IGNORED_KEPT, render
from tidings.testing import TestApp
from tidings.timers import TIMERS


class Begin(Event, topic="sagatest.begin", key="job"):
    job: str


class Work(Command, topic="sagatest.work", key="job"):
    job: str


class Done(Event, topic="sagatest.done", key="job"):
    job: str


class Job(SagaState):
    pass


# A saga whose step has a deadline and which has no @on_timeout.
hasty = Service("saga-no-timeout")
hasty_saga = Saga(hasty, "job", Job)


@hasty_saga.starts
def hasty_begin(event: Begin, s: Job) -> None:
    s.send(Work(job=s.id))
    s.expect("working", Done, within=5)


# A complete one: a deadline and its timeout transition.
steady = Service("saga-steady")
steady_saga = Saga(steady, "job", Job)


@steady_saga.starts
def steady_begin(event: Begin, s: Job) -> None:
    s.send(Work(job=s.id))
    s.expect("working", Done, within=5)


@steady_saga.on
def steady_done(event: Done, s: Job) -> None:
    s.finish("done")


@steady_saga.on_timeout
def steady_timed_out(s: Job) -> None:
    s.finish("timed out")


async def test_a_deadline_without_a_timeout_transition_fails_where_it_is_declared() -> None:
    async with TestApp(hasty) as app:
        with pytest.raises(TypeError, match=r"saga job: step 'working' has a deadline.*on_timeout"):
            async with app.unit_of_work(hasty) as ctx:
                await hasty_saga.deliver(Begin(job="j1"), ctx)
        # Nothing committed: no instance, no timer armed to fail later.
        assert await app.get(hasty_saga.collection, "j1") is None
        async with app.unit_of_work(hasty) as ctx:
            assert await ctx.list(TIMERS) == []


def test_a_transition_run_outside_a_saga_may_still_set_a_deadline() -> None:
    s = Job(id="j1")  # a pure test of a transition: no saga, nothing to check against
    steady_begin(Begin(job="j1"), s)
    _, expectation = s.take_effects()
    assert expectation is not None and expectation.within == 5


async def test_ignored_messages_are_counted_and_only_the_last_few_kept() -> None:
    async with TestApp(steady) as app:
        async with app.unit_of_work(steady) as ctx:
            assert await steady_saga.deliver(Begin(job="j1"), ctx) == "applied"
        async with app.unit_of_work(steady) as ctx:
            assert await steady_saga.deliver(Done(job="j1"), ctx) == "applied"
        duplicates = IGNORED_KEPT * 3
        for _ in range(duplicates):  # late replies for a finished saga, without end
            async with app.unit_of_work(steady) as ctx:
                why = await steady_saga.deliver(Done(job="j1"), ctx)
            assert why == "ignored: finished (done)"
        s = await app.get(steady_saga.collection, "j1")
        assert s is not None
        assert s.ignored == duplicates
        assert [h.step_to for h in s.history if not h.ignored] == ["working", "done"]
        assert len(s.history) == 2 + IGNORED_KEPT  # the transitions, then the last ignored
        assert all(h.ignored for h in s.history[2:])
        assert f"ignored {duplicates} message(s)" in "\n".join(render("job", s))
