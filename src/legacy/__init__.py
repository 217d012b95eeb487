"""The legacy back office the shop is migrating away from (see :mod:`legacy.app`).

Deliberately old-fashioned: synchronous SQL, no events, no Tidings. The shop learns of
its changes through change data capture (Debezium) and the anti-corruption layer in
:mod:`shop.acl`; :mod:`legacy.facade` strangles it route by route.
"""
