"""The PostgreSQL store: inbox, outbox, documents and events in PostgreSQL, on psycopg 3.

Each unit of work is one REPEATABLE READ transaction on its own pooled connection, so the
units of work of one process run concurrently and the database, not a lock here, keeps them
honest: a versioned write is one conditional statement, and a write that meets a row a
concurrent transaction committed after this one's snapshot fails with a serialization error
(raised as :class:`ConcurrencyConflict`). So two writers with the same ``expected_version``
cannot both win, and neither can two members handling one event after both found it unseen.

Several relays, in several processes, share the outbox: ``claim_outbox`` takes rows with
``FOR UPDATE SKIP LOCKED`` and stamps a lease (``claimed_until``, on the database's clock,
so relays on hosts with skewed clocks agree). A unit of work that queues outbox rows also
sends ``NOTIFY tidings_outbox, '<service>'``, which PostgreSQL delivers only on commit;
:meth:`PostgresStore.wait_outbox` listens on a dedicated connection, so an idle relay wakes
within milliseconds of a commit instead of polling.

Round trips are what a unit of work waits on, so statements whose result nobody waits for
(BEGIN, SAVEPOINT and RELEASE, the inbox marks, the outbox rows) are not sent on their
own: they wait in the unit of work and go with the next statement that is waited for, in
one round trip (psycopg's pipeline mode), at the latest with the COMMIT. An error of a
deferred statement is raised there, and rolls the unit of work back as any error does.
A unit of work that ran no statement sends nothing at all.

Tables are created by versioned migrations at :meth:`PostgresStore.connect`, under an
advisory lock so that services starting together do not race. They go to the first schema
of the ``search_path`` (``?options=-csearch_path%3Dmyschema`` in the URL picks another).

The event store appends under a per-service advisory lock held to the commit, so that
global positions commit in increasing order within a service (see
:mod:`~tidings.store.postgres.events`).

Modules: :mod:`~tidings.store.postgres.store` (the pool, the relay's side, LISTEN),
:mod:`~tidings.store.postgres.unit` (a unit of work, with the deferred statements),
:mod:`~tidings.store.postgres.events` (the event store's statements),
:mod:`~tidings.store.postgres.migrations` and :mod:`~tidings.store.postgres.errors`.
"""

from tidings.store.postgres.errors import redact
from tidings.store.postgres.migrations import MIGRATIONS
from tidings.store.postgres.store import PostgresStore
from tidings.store.postgres.unit import PostgresUnitOfWork

__all__ = ["MIGRATIONS", "PostgresStore", "PostgresUnitOfWork", "redact"]
