"""The percentile every benchmark reports, computed one way."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (1-99) of ``values``, interpolated between the two nearest
    values (``statistics.quantiles``' inclusive method); one value is its own percentile.
    ``ValueError`` if there are none."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
