"""Event sourcing: aggregates whose state is the fold of their events, kept in the store's
event streams and published through its outbox (see :mod:`.aggregate` for the API and
:mod:`.repository` for loading and saving)."""

from tidings.eventsourcing.aggregate import Aggregate, AggregateError, AggregateInfo, applies

__all__ = ["Aggregate", "AggregateError", "AggregateInfo", "applies"]
