"""The guard in front of a service's HTTP API: keys or JWTs, rate limits, headers, CORS.

``tidings run --api-keys FILE`` (or ``--jwt-issuer/--jwt-audience/--jwt-key-file``, and
``--rate-limit 10/second;300/minute``) turns them on; see :mod:`tidings.apiguard.guard`.
"""

from tidings.apiguard.guard import CLIENT_KEY, ApiGuard, GuardConfig, guard
from tidings.apiguard.keys import ApiKeys, key_line, new_key

__all__ = ["CLIENT_KEY", "ApiGuard", "ApiKeys", "GuardConfig", "guard", "key_line", "new_key"]
