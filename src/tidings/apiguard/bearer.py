"""OAuth2 bearer tokens: JWTs checked against one issuer, one audience and the issuer's keys.

The key file is what the identity provider publishes, in one of three forms:

* a PEM public key (RSA or EC): tokens signed with RS256/PS256 or ES256/ES384/ES512;
* a JWK or a JWK Set (JSON, e.g. a saved ``jwks_uri`` document): the ``kid`` picks the key;
* anything else is a shared secret for HS256 (at least 32 bytes), for tests and
  single-party setups.

The algorithms accepted follow from the key's type, never from the token, so a token
cannot pick ``none`` or sign with HS256 using a public key as the secret (algorithm
confusion). A token must carry ``iss``, ``aud``, ``exp`` and ``sub``; ``iss`` and ``aud``
must equal what the operator configured, ``exp`` (and ``nbf`` when present) are checked
with :data:`LEEWAY` seconds of clock skew. The client id for rate limits is ``sub``.
Checking is done by joserfc; this module only chooses the rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from joserfc import jwk, jwt
from joserfc.errors import JoseError

LEEWAY = 30
_ALGORITHMS = {
    "RSA": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
    "EC": ["ES256", "ES384", "ES512"],
    "OKP": ["EdDSA"],
    "oct": ["HS256", "HS384", "HS512"],
}
MIN_SECRET_BYTES = 32


class InvalidToken(ValueError):
    """A bearer token that is refused; the message says why (safe to show the client)."""


def load_key(path: Path) -> jwk.Key | jwk.KeySet:
    """The verification key(s) in ``path``; raises ValueError naming the file and problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"JWT key file {path}: {exc.strerror or exc}") from None
    text = raw.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = _pem_key(text)
            if key.is_private:
                raise ValueError(
                    f"JWT key file {path} holds a private key: give the service the issuer's "
                    "public key only"
                )
            return key
        if text.startswith(b"{"):
            document = json.loads(text)
            if "keys" in document:
                return jwk.KeySet.import_key_set(document)
            return jwk.import_key(document)
    except (JoseError, ValueError, TypeError) as exc:
        if "private key" in str(exc):
            raise
        raise ValueError(f"JWT key file {path}: not a usable PEM, JWK or JWK Set ({exc})") from None
    if len(text) < MIN_SECRET_BYTES:
        raise ValueError(
            f"JWT key file {path}: a shared secret must be at least {MIN_SECRET_BYTES} bytes"
        )
    return jwk.OctKey.import_key(text)


def _pem_key(pem: bytes) -> jwk.Key:
    """A PEM key of whichever type it is (joserfc asks for the type to be named)."""
    problems = []
    for key_type in ("RSA", "EC", "OKP"):
        try:
            return jwk.import_key(pem, key_type)
        except (JoseError, ValueError, TypeError) as exc:
            problems.append(f"{key_type}: {exc}")
    raise ValueError("; ".join(problems))


def _algorithms(key: jwk.Key | jwk.KeySet) -> list[str]:
    keys = key.keys if isinstance(key, jwk.KeySet) else [key]
    return sorted({alg for k in keys for alg in _ALGORITHMS.get(k.key_type, [])})


class BearerVerifier:
    """Checks bearer JWTs for one issuer and audience; :meth:`subject` returns ``sub``."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        key: jwk.Key | jwk.KeySet,
        *,
        now: Callable[[], int] | None = None,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("JWT checking needs both an issuer and an audience")
        self.issuer = issuer
        self.audience = audience
        self._key = key
        self._algorithms = _algorithms(key)
        self._claims = jwt.JWTClaimsRegistry(
            now=now,
            leeway=LEEWAY,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )

    @classmethod
    def from_file(cls, issuer: str, audience: str, key_file: Path) -> BearerVerifier:
        return cls(issuer, audience, load_key(key_file))

    def subject(self, token: str) -> str:
        """The token's ``sub`` if it is valid; raises :class:`InvalidToken` saying why."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=self._algorithms)
            self._claims.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidToken(f"bearer token refused: {exc.description or exc.error}") from None
        except (ValueError, TypeError):
            raise InvalidToken("bearer token refused: not a well-formed JWT") from None
        return str(decoded.claims["sub"])
