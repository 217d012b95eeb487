"""Small helpers for the URLs that wire a service to its broker and store."""

from __future__ import annotations


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL, as SQLAlchemy reads it.

    ``sqlite:///./x.db`` and ``sqlite:///x.db`` are relative to the working directory,
    ``sqlite:////abs/x.db`` is absolute, ``sqlite://:memory:`` is an in-memory database.
    """
    if url in ("sqlite://", "sqlite://:memory:", "sqlite:///:memory:"):
        return ":memory:"
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"{url!r}: a SQLite URL looks like sqlite:///./tidings.db")
    return url[len(prefix) :]
