"""Typed state: a named collection of documents of one pydantic model.

Kept apart from :mod:`tidings.service` so that declarations below the service (the
projections of :mod:`tidings.projection`) name collections too; ``tidings.service`` and
``tidings`` re-export both classes.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

import pydantic

T = TypeVar("T", bound=pydantic.BaseModel)


@dataclasses.dataclass(frozen=True, slots=True)
class Collection(Generic[T]):
    """A named collection of documents of one pydantic model, e.g. ``stock`` of StockItem.

    Documents are stored as JSON and versioned: every put raises the version by one,
    which :meth:`Context.put` can check (optimistic concurrency).
    """

    name: str
    model: type[T]


@dataclasses.dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A document with the version it was read at, for ``ctx.put(..., expected_version=)``."""

    value: T
    version: int
