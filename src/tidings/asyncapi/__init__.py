"""AsyncAPI 3.0 documents of Tidings services: ``tidings asyncapi`` and the dashboard's
``/asyncapi`` pages.

    from tidings.asyncapi import asyncapi_document, dump, parse_server

    document = asyncapi_document([order, inventory], servers=[parse_server("prod=kafka://k:9092")])
    print(dump(document, "yaml"))

The document is built from the services' declarations alone (no broker, no store):
:mod:`.document` says what goes in and from where, :mod:`.schemas` where the payload
schemas come from, :mod:`.servers` how broker URLs become servers, and :mod:`.page`
renders the document as an HTML page.
"""

from __future__ import annotations

from tidings.asyncapi.document import ASYNCAPI_VERSION, asyncapi_document, document_id, dump
from tidings.asyncapi.servers import Server, parse_server

__all__ = [
    "ASYNCAPI_VERSION",
    "Server",
    "asyncapi_document",
    "document_id",
    "dump",
    "parse_server",
]
