"""The reference shop: order, inventory and billing services, choreographed by events.

    Client --HTTP--> order: PlaceOrder           -> OrderPlaced
    inventory on OrderPlaced                     -> InventoryReserved | InventoryRejected
    billing   on InventoryReserved               -> PaymentProcessed  | PaymentFailed
    inventory on PaymentFailed                   -> InventoryReleased          (compensation)
    order     on PaymentProcessed                -> OrderCompleted
    order     on InventoryRejected / InventoryReleased -> OrderCancelled

Business code only: it imports the framework API (``tidings``), never a broker or a store.
"""
