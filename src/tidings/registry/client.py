"""Talk to a schema registry (Confluent's API: Confluent, Redpanda, Apicurio's ccompat,
or ``tidings registry serve``) from a service, with ids cached.

Hand-written on httpx rather than confluent-kafka's ``SchemaRegistryClient``: that client
comes with the Kafka extra and its own dependencies, and a service on the SQLite log or
NATS needs a registry too; it is also synchronous. The calls made are five (register,
look up, read a subject's versions and its config, read a schema by id), and the tests
hold this client and confluent-kafka's to the same server.

Each (subject, schema) is registered once per process: :meth:`RegistryClient.register`
caches the id, so steady-state publishing makes no registry calls (``calls`` counts them).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tidings.formats import SchemaUnavailable
from tidings.schemas import Mode, SchemaType, canonical_text

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(Exception):
    """The registry refused a request: ``status``, Confluent's ``code`` and its message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RegistryUnavailable(RegistryError, SchemaUnavailable):
    """The registry cannot be reached; the message names its URL. An infrastructure error
    (:class:`~tidings.formats.SchemaUnavailable`): a consumer waits it out."""


class RegistryClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, headers={"Accept": CONTENT_TYPE}
        )
        self._ids: dict[tuple[str, str], int] = {}
        self.calls = 0  # requests sent, for tests and benchmarks of the cache

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        self.calls += 1
        try:
            response = await self._http.request(
                method,
                path,
                content=None if body is None else json.dumps(body),
                headers={"Content-Type": CONTENT_TYPE},
            )
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                0, 0, f"schema registry {self.url} is unreachable: {exc or type(exc).__name__}"
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            if isinstance(payload, dict) and "message" in payload:
                code = int(payload.get("error_code", response.status_code))
                raise RegistryError(response.status_code, code, str(payload["message"]))
            raise RegistryError(
                response.status_code,
                response.status_code,
                f"schema registry {self.url}{path}: HTTP {response.status_code}",
            )
        return payload

    @staticmethod
    def _body(schema_type: SchemaType, schema: str) -> dict[str, Any]:
        body: dict[str, Any] = {"schema": schema}
        if schema_type is not SchemaType.AVRO:
            body["schemaType"] = schema_type.value
        return body

    async def register(self, subject: str, schema_type: SchemaType, schema: str) -> int:
        """The id of ``schema`` under ``subject``, registering it if need be (cached)."""
        found_id = self._ids.get((subject, schema))  # the text as given: no parsing
        if found_id is not None:
            return found_id
        key = (subject, canonical_text(json.loads(schema)))
        if key in self._ids:
            self._ids[(subject, schema)] = self._ids[key]
            return self._ids[key]
        found = await self._request(
            "POST", f"/subjects/{_quote(subject)}/versions", self._body(schema_type, schema)
        )
        self._ids[key] = self._ids[(subject, schema)] = int(found["id"])
        return self._ids[key]

    async def schema(self, schema_id: int) -> tuple[SchemaType, str] | None:
        """The type and text of the schema with id ``schema_id``; None if the registry says
        it has none (Confluent's 40403: a bare 404 is raised, it may be a wrong URL)."""
        try:
            found = await self._request("GET", f"/schemas/ids/{int(schema_id)}")
        except RegistryError as exc:
            if exc.code == 40403:
                return None
            raise
        return SchemaType(found.get("schemaType", "AVRO")), str(found["schema"])

    async def versions(self, subject: str) -> list[tuple[int, SchemaType, str]]:
        """The subject's (version, type, schema), oldest first; empty if it has none."""
        try:
            numbers = await self._request("GET", f"/subjects/{_quote(subject)}/versions")
        except RegistryError as exc:
            if exc.code == 40401:
                return []
            raise
        out = []
        for number in numbers:
            v = await self._request("GET", f"/subjects/{_quote(subject)}/versions/{number}")
            out.append((int(number), SchemaType(v.get("schemaType", "AVRO")), str(v["schema"])))
        return out

    async def mode(self, subject: str) -> Mode:
        """The compatibility rule of ``subject`` (its own, else the registry's)."""
        found = await self._request("GET", f"/config/{_quote(subject)}?defaultToGlobal=true")
        return Mode.parse(str(found["compatibilityLevel"]))


def _quote(subject: str) -> str:
    from urllib.parse import quote

    return quote(subject, safe="")
