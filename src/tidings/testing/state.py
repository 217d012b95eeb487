"""Read a service's state by store URL, typed: for checks on services in other processes.

    stock = await documents(store_url, inventory.service, inventory.stock)
    # {"widget": StockItem(sku="widget", available=10), ...}
    orders = await projected(store_url, order_view.view, order_view.orders)
    # the serving generation of a projection's collection, the same way

It opens the service's store as ``tidings run`` would (``{service}`` in the URL is the
service's name) and reads in one transaction, so what it returns is one consistent state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

import pydantic

from tidings.projection import Projection, read_pointer
from tidings.service import Collection, Service
from tidings.store import UnitOfWork, open_store

T = TypeVar("T", bound=pydantic.BaseModel)
_PAGE = 1000


async def documents(store: str, service: Service, collection: Collection[T]) -> dict[str, T]:
    """Every document of ``collection`` in the state of ``service``, by key, in key order."""
    if service.collections.get(collection.name) is not collection:
        raise LookupError(f"{service.name} declares no collection {collection.name!r}")
    async with _unit(store, service.name) as uow:
        return await _all(uow, collection.name, collection.model)


async def projected(store: str, projection: Projection, collection: Collection[T]) -> dict[str, T]:
    """Every document of a projection's ``collection`` in the generation it serves now."""
    if projection.collections.get(collection.name) is not collection:
        raise LookupError(f"projection {projection.name} has no collection {collection.name!r}")
    async with _unit(store, projection.service) as uow:
        generation = (await read_pointer(uow, projection)).generation
        stored = projection.stored_name(collection.name, generation)
        return await _all(uow, stored, collection.model)


@contextlib.asynccontextmanager
async def _unit(store: str, service: str) -> AsyncIterator[UnitOfWork]:
    """One unit of work on ``service``'s store, opened for it and closed after."""
    opened = await open_store(store, service)
    try:
        async with opened.unit_of_work(service) as uow:
            yield uow
    finally:
        await opened.close()


async def _all(uow: UnitOfWork, stored: str, model: type[T]) -> dict[str, T]:
    found: dict[str, T] = {}
    after: str | None = None
    while True:
        page = await uow.list(stored, _PAGE, after)
        found.update((d.key, model.model_validate(d.data)) for d in page)
        if len(page) < _PAGE:
            return found
        after = page[-1].key
