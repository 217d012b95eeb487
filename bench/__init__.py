"""Benchmarks: ``make bench`` (``python -m bench``). They print ratios measured in one run."""
