"""Kafka ACLs and SCRAM users through the admin API (confluent-kafka's AdminClient).

The caller's URL names a user the broker lets alter ACLs (a super user, e.g. the admin of
``scripts/services up kafka-secure``). Every call waits at most ``timeout`` seconds.
Rules:

* :func:`granted` is what the broker holds for the given principals (ALLOW, literal),
  in the plan's own terms, so that drift is a set difference;
* :func:`apply` creates the missing bindings and, with ``prune``, deletes the ones the
  plan does not list for these principals; a crash halfway leaves some created: running
  it again finishes the job (creating an existing binding is a no-op);
* :func:`upsert_users` sets SCRAM-SHA-512 credentials (created or replaced).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# Defined in these modules; confluent_kafka.admin re-exports them without an __all__.
from confluent_kafka.admin._acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
)
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from confluent_kafka.admin._scram import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from tidings.acl.plan import KafkaAcl
from tidings.transport.errors import NotAuthorized
from tidings.transport.kafka.config import KafkaSettings, describe

__all__ = ["admin_client", "apply", "granted", "upsert_users"]

_ITERATIONS = 8192


def admin_client(url: str) -> tuple[AdminClient, str]:
    """An admin client for ``url`` (credentials as any broker URL) and the URL to show."""
    settings = KafkaSettings.from_url(url)
    return AdminClient(settings.common("tidings-acl", lambda _error: None)), settings.url


def _binding(acl: KafkaAcl, kind: Any = AclBinding) -> Any:
    return kind(
        ResourceType[acl.resource], acl.name, ResourcePatternType.LITERAL, acl.principal, "*",
        AclOperation[acl.operation], AclPermissionType.ALLOW,
    )  # fmt: skip


def granted(
    admin: AdminClient, shown: str, principals: Iterable[str], timeout: float = 10.0
) -> set[KafkaAcl]:
    """The ALLOW bindings the broker holds for ``principals``."""
    found: set[KafkaAcl] = set()
    for principal in sorted(set(principals)):
        any_name: Any = None  # a filter's None matches every name and host
        query = AclBindingFilter(
            ResourceType.ANY, any_name, ResourcePatternType.ANY, principal, any_name,
            AclOperation.ANY, AclPermissionType.ANY,
        )  # fmt: skip
        try:
            bindings = admin.describe_acls(query, request_timeout=timeout).result(timeout)
        except KafkaException as exc:
            raise NotAuthorized(f"{shown}: cannot read the ACLs: {describe(exc)}") from None
        for b in bindings:
            found.add(KafkaAcl(b.principal, b.restype.name, b.name, b.operation.name))
    return found


def apply(
    admin: AdminClient,
    shown: str,
    wanted: Iterable[KafkaAcl],
    *,
    prune: bool = False,
    timeout: float = 10.0,
) -> tuple[list[KafkaAcl], list[KafkaAcl]]:
    """Create what is missing (and with ``prune`` delete what is extra); (created, deleted)."""
    wanted = set(wanted)
    have = granted(admin, shown, {a.principal for a in wanted}, timeout)
    missing = sorted(wanted - have)
    extra = sorted(have - wanted) if prune else []
    try:
        if missing:
            futures = admin.create_acls([_binding(a) for a in missing], request_timeout=timeout)
            for future in futures.values():
                future.result(timeout)
        if extra:
            filters = [_binding(a, AclBindingFilter) for a in extra]
            for future in admin.delete_acls(filters, request_timeout=timeout).values():
                future.result(timeout)
    except KafkaException as exc:
        raise NotAuthorized(f"{shown}: cannot change the ACLs: {describe(exc)}") from None
    return missing, extra


def upsert_users(
    admin: AdminClient, shown: str, passwords: Mapping[str, str], timeout: float = 10.0
) -> None:
    """Create or replace the SCRAM-SHA-512 credentials of each user."""
    if not passwords:
        return
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _ITERATIONS)
    changes: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(u, info, p.encode()) for u, p in passwords.items()
    ]
    try:
        for future in admin.alter_user_scram_credentials(changes, request_timeout=timeout).values():
            future.result(timeout)
    except KafkaException as exc:
        raise NotAuthorized(f"{shown}: cannot set SCRAM users: {describe(exc)}") from None
