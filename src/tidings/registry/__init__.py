"""Schema registries: a client for Confluent's REST API (:mod:`.client`), what a service
does with one at start (:mod:`.startup`), and an embedded server for development and
tests (:mod:`.server` on :mod:`.storage`, ``tidings registry serve``).

Business code never imports this package; ``tidings run --registry URL`` uses it.
"""
