"""Read a service's state by store URL, typed: for checks on services in other processes.

    stock = await documents(store_url, inventory.service, inventory.stock)
    # {"widget": StockItem(sku="widget", available=10), ...}

It opens the service's store as ``tidings run`` would (``{service}`` in the URL is the
service's name) and reads in one transaction, so what it returns is one consistent state.
"""

from __future__ import annotations

from typing import TypeVar

import pydantic

from tidings.service import Collection, Service
from tidings.store import open_store

T = TypeVar("T", bound=pydantic.BaseModel)
_PAGE = 1000


async def documents(store: str, service: Service, collection: Collection[T]) -> dict[str, T]:
    """Every document of ``collection`` in the state of ``service``, by key, in key order."""
    if service.collections.get(collection.name) is not collection:
        raise LookupError(f"{service.name} declares no collection {collection.name!r}")
    opened = await open_store(store, service.name)
    try:
        found: dict[str, T] = {}
        async with opened.unit_of_work(service.name) as uow:
            after: str | None = None
            while True:
                page = await uow.list(collection.name, _PAGE, after)
                found.update((d.key, collection.model.model_validate(d.data)) for d in page)
                if len(page) < _PAGE:
                    return found
                after = page[-1].key
    finally:
        await opened.close()
