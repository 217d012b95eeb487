"""The reference shop: order, inventory and billing services, choreographed by events.

    Client --HTTP--> order: PlaceOrder           -> OrderPlaced
    inventory on OrderPlaced                     -> InventoryReserved | InventoryRejected
    billing   on InventoryReserved               -> PaymentProcessed  | PaymentFailed
    inventory on PaymentFailed                   -> InventoryReleased          (compensation)
    order     on PaymentProcessed                -> OrderCompleted
    order     on InventoryRejected / InventoryReleased -> OrderCancelled

The services are business code only: they import the framework API (``tidings``), never a
broker or a store. :mod:`shop.demo` (what ``tidings demo`` runs) starts them as processes
and :mod:`shop.invariants` checks them from outside, over HTTP and with the read helpers of
:mod:`tidings.testing`.
"""
