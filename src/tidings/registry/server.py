"""The embedded schema registry: the subset of Confluent Schema Registry's REST API that
Tidings uses, for development and tests (no Confluent build runs on our machines).

Hand-written, because no Python implementation of that API exists as a library (Karapace
is a whole Kafka-backed service, not something to embed). Same paths, status codes and
error bodies (``{"error_code": 40401, "message": ...}``) as Confluent's, so its own client
(``confluent_kafka.schema_registry.SchemaRegistryClient``) drives it, as the tests do:

====================================================  =====================================
``POST /subjects/{s}/versions``                       register -> ``{"id": n}``; 409
                                                      incompatible, 42201 invalid schema
``GET /subjects``, ``GET /subjects/{s}/versions``     names, version numbers (40401)
``GET /subjects/{s}/versions/{v|latest}``             one version (40401, 40402, 42202)
``POST /subjects/{s}``                                look a schema up (40401, 40403)
``GET /schemas/ids/{id}``                             a schema by id (40403)
``POST /compatibility/subjects/{s}/versions/{v}``     ``{"is_compatible": ..., "messages"}``
``GET/PUT/DELETE /config``, ``/config/{s}``           compatibility (42203 unknown level,
                                                      40408 subject has none)
``DELETE /subjects/{s}[/versions/{v}]``               soft, then ``?permanent=true``
====================================================  =====================================

Schema types: AVRO (the default, as in Confluent) and JSON; PROTOBUF and references are
refused with 42201. A registration is checked with :func:`tidings.schemas.check` against
the subject's versions under its mode (the subject's, else the global one, else
BACKWARD_TRANSITIVE); the 409's message lists each break with its field path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tidings.registry.storage import RegistryStorage, Version
from tidings.schemas import (
    DEFAULT_MODE,
    InvalidSchema,
    Mode,
    SchemaType,
    canonical_text,
    check,
    parse,
)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _reply(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=CONTENT_TYPE)


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def make_app(storage: RegistryStorage) -> FastAPI:
    """The registry's ASGI app over ``storage``."""
    app = FastAPI(title="Tidings schema registry", openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return _reply({"error_code": exc.code, "message": exc.message}, exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _reply(
            {"error_code": exc.status_code, "message": f"HTTP {exc.status_code} {exc.detail}"},
            exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _reply({"error_code": 422, "message": f"{where}: {first.get('msg')}"}, 422)

    def latest(subject: str) -> list[Version]:
        versions = storage.versions(subject)
        if not versions:
            raise _subject_not_found(subject)
        return versions

    def one_version(subject: str, version: str) -> Version:
        versions = latest(subject)
        if version == "latest" or version == "-1":
            return versions[-1]
        if not version.isdigit() or not 1 <= int(version) <= 2**31 - 1:
            raise RegistryError(
                422,
                42202,
                f"The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"",
            )
        for v in versions:
            if v.version == int(version):
                return v
        raise RegistryError(404, 40402, f"Version {version} not found.")

    def mode_of(subject: str) -> Mode:
        return Mode(storage.compatibility(subject) or storage.compatibility("") or DEFAULT_MODE)

    async def candidate(request: Request) -> tuple[SchemaType, str, str]:
        """The posted schema: (type, text as sent, canonical text); 42201 if invalid."""
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as exc:
            raise RegistryError(422, 422, f"the request body is not JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise RegistryError(422, 42201, 'Invalid schema: the body needs a "schema" string')
        raw_type = body.get("schemaType") or "AVRO"
        try:
            kind = SchemaType.parse(str(raw_type))
        except ValueError:
            raise RegistryError(
                422,
                42201,
                f"Invalid schema: schemaType {raw_type} is not supported here (AVRO, JSON)",
            ) from None
        if body.get("references"):
            raise RegistryError(
                422,
                42201,
                "Invalid schema: schema references are not supported by the embedded registry",
            )
        try:
            parse(kind, body["schema"])
        except InvalidSchema as exc:
            raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None
        return kind, body["schema"], canonical_text(json.loads(body["schema"]))

    def described(v: Version) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subject": v.subject,
            "version": v.version,
            "id": v.schema_id,
            "schema": v.schema,
        }
        if v.schema_type != SchemaType.AVRO:
            out["schemaType"] = v.schema_type
        return out

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request) -> JSONResponse:
        kind, text, canonical = await candidate(request)
        versions = storage.versions(subject)
        for v in versions:
            if v.schema_type == kind and canonical_text(json.loads(v.schema)) == canonical:
                return _reply({"id": v.schema_id})
        mode = mode_of(subject)
        same_kind = [v for v in versions if v.schema_type == kind]
        breaks = check(
            mode, kind, text, [v.schema for v in same_kind], [v.version for v in same_kind]
        )
        if breaks:
            detail = "; ".join(str(b) for b in breaks)
            raise RegistryError(
                409,
                409,
                f'Schema being registered is incompatible with an earlier schema for subject "{subject}" ({mode}): {detail}',
            )
        added = storage.add(subject, kind, canonical, text)
        return _reply({"id": added.schema_id})

    @app.get("/subjects")
    async def subjects(deleted: bool = False) -> JSONResponse:
        return _reply(storage.subjects(deleted))

    @app.get("/subjects/{subject}/versions")
    async def versions(subject: str, deleted: bool = False) -> JSONResponse:
        found = storage.versions(subject, deleted)
        if not found:
            raise _subject_not_found(subject)
        return _reply([v.version for v in found])

    @app.get("/subjects/{subject}/versions/{version}")
    async def get_version(subject: str, version: str) -> JSONResponse:
        return _reply(described(one_version(subject, version)))

    @app.get("/subjects/{subject}/versions/{version}/schema")
    async def get_version_schema(subject: str, version: str) -> JSONResponse:
        return _reply(json.loads(one_version(subject, version).schema))

    @app.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request) -> JSONResponse:
        kind, _, canonical = await candidate(request)
        for v in reversed(latest(subject)):
            if v.schema_type == kind and canonical_text(json.loads(v.schema)) == canonical:
                return _reply(described(v))
        raise RegistryError(404, 40403, "Schema not found")

    @app.get("/schemas/ids/{schema_id}")
    async def by_id(schema_id: int) -> JSONResponse:
        found = storage.schema(schema_id)
        if found is None:
            raise RegistryError(404, 40403, "Schema not found")
        out: dict[str, Any] = {"schema": found[1]}
        if found[0] != SchemaType.AVRO:
            out["schemaType"] = found[0]
        return _reply(out)

    @app.get("/schemas/types")
    async def types() -> JSONResponse:
        return _reply([t.value for t in SchemaType])

    async def compatibility(
        subject: str, version: str | None, request: Request, verbose: bool
    ) -> JSONResponse:
        kind, text, _ = await candidate(request)
        mode = mode_of(subject)
        if version is None:
            against = [v for v in storage.versions(subject) if v.schema_type == kind]
        else:
            against = [one_version(subject, version)]
            mode = Mode(mode.value.removesuffix("_TRANSITIVE"))
        breaks = check(mode, kind, text, [v.schema for v in against], [v.version for v in against])
        body: dict[str, Any] = {"is_compatible": not breaks}
        if verbose or breaks:
            body["messages"] = [str(b) for b in breaks]
        return _reply(body)

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    async def compatible_with(
        subject: str, version: str, request: Request, verbose: bool = False
    ) -> JSONResponse:
        return await compatibility(subject, version, request, verbose)

    @app.post("/compatibility/subjects/{subject}/versions")
    async def compatible_all(subject: str, request: Request, verbose: bool = False) -> JSONResponse:
        return await compatibility(subject, None, request, verbose)

    async def level(request: Request) -> str:
        try:
            body = json.loads(await request.body() or b"null")
            return Mode.parse(str(body["compatibility"])).value
        except (json.JSONDecodeError, TypeError, KeyError, ValueError):
            raise RegistryError(
                422,
                42203,
                "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive",
            ) from None

    @app.get("/config")
    async def get_global() -> JSONResponse:
        return _reply({"compatibilityLevel": storage.compatibility("") or DEFAULT_MODE.value})

    @app.put("/config")
    async def put_global(request: Request) -> JSONResponse:
        mode = await level(request)
        storage.set_compatibility("", mode)
        return _reply({"compatibility": mode})

    @app.get("/config/{subject}")
    async def get_config(subject: str, defaultToGlobal: bool = False) -> JSONResponse:
        mode = storage.compatibility(subject)
        if mode is None and defaultToGlobal:
            mode = storage.compatibility("") or DEFAULT_MODE.value
        if mode is None:
            raise RegistryError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return _reply({"compatibilityLevel": mode})

    @app.put("/config/{subject}")
    async def put_config(subject: str, request: Request) -> JSONResponse:
        mode = await level(request)
        storage.set_compatibility(subject, mode)
        return _reply({"compatibility": mode})

    @app.delete("/config/{subject}")
    async def delete_config(subject: str) -> JSONResponse:
        mode = storage.compatibility(subject)
        if mode is None:
            raise RegistryError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        storage.set_compatibility(subject, None)
        return _reply({"compatibilityLevel": mode})

    @app.delete("/subjects/{subject}")
    async def delete_subject(subject: str, permanent: bool = False) -> JSONResponse:
        if not storage.versions(subject, deleted=True):
            raise _subject_not_found(subject)
        deleted = storage.delete(subject, None, permanent)
        if not deleted:
            code, why = (
                (40405, "was not deleted first before being permanently deleted")
                if permanent
                else (40404, "was soft deleted")
            )
            raise RegistryError(404, code, f"Subject '{subject}' {why}.")
        return _reply(deleted)

    @app.delete("/subjects/{subject}/versions/{version}")
    async def delete_version(subject: str, version: str, permanent: bool = False) -> JSONResponse:
        number = (
            one_version(subject, version).version
            if not permanent
            else int(version)
            if version.isdigit()
            else -1
        )
        deleted = storage.delete(subject, number, permanent)
        if not deleted:
            raise RegistryError(
                404,
                40407 if permanent else 40402,
                f"Version {version} not found (a permanent delete needs a soft delete first).",
            )
        return _reply(deleted[0])

    return app


def serve(store_url: str, host: str, port: int, ready_file: Path | None = None) -> None:
    """Serve the registry on ``host:port`` until Ctrl-C or SIGTERM, then exit cleanly."""
    import asyncio
    import contextlib
    import signal

    import uvicorn

    storage = RegistryStorage(store_url)
    config = uvicorn.Config(
        make_app(storage), host=host, port=port, log_level="warning", log_config=None
    )
    server = uvicorn.Server(config)
    # This process stops on SIGINT/SIGTERM with exit code 0; uvicorn's own handlers would
    # re-raise the signal once stopped.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, setattr, server, "should_exit", True)
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has a flag
            await asyncio.sleep(0.05)
        if ready_file is not None and server.started:
            ready_file.write_text("ready")  # noqa: ASYNC240 - a few bytes, once
        await task

    try:
        asyncio.run(main())
    finally:
        storage.close()
