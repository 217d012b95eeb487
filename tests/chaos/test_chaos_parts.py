"""The pure parts of the chaos run: its seeded schedule and the stall it measures."""

from __future__ import annotations

from bench.chaos_checks import longest_stall
from bench.chaos_faults import KINDS, schedule


def test_a_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    first, again, other = schedule(3, 300, 2), schedule(3, 300, 2), schedule(4, 300, 2)
    assert [(f.kind, f.at, f.target) for f in first] == [(f.kind, f.at, f.target) for f in again]
    assert [(f.kind, f.at, f.target) for f in first] != [(f.kind, f.at, f.target) for f in other]
    assert sorted(f.kind for f in first) == sorted(KINDS * 2)
    times = [f.at for f in first]
    assert times == sorted(times) and 30 <= times[0] and times[-1] < 300


def test_a_stall_counts_only_while_an_order_waits() -> None:
    # settled at 1 and 5 (one waiting since 0.5): 4 s; nothing waits from 5.1 to 10
    times = [(0.0, 1.0), (0.5, 5.0), (4.8, 5.1), (10.0, 11.0)]
    assert longest_stall(times, 0, 100) == 4.0
    assert longest_stall(times, 2, 4) == 2.0  # clipped to the window
    assert longest_stall([], 0, 10) == 0.0


def test_the_load_summary_gives_min_mean_max_and_nothing_for_no_sample() -> None:
    from bench.chaos import _load_summary

    assert _load_summary([4.0, 20.5, 9.0]) == {"min": 4.0, "mean": 11.2, "max": 20.5}
    assert _load_summary([]) == {}
