"""Least privilege on the broker, derived from the services' code (``tidings acl``)."""
