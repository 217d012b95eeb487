"""A break: one reason a schema change is incompatible, at one field path."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Break:
    """``path`` is the field (``lines[].quantity``; empty for the whole payload),
    ``reason`` says why, ``version`` is the earlier version it breaks against (set by
    :func:`tidings.schemas.compatibility.check`)."""

    path: str
    reason: str
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.path or '(the payload)'}: {self.reason}"
