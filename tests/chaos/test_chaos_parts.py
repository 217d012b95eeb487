"""The pure parts of the chaos run: its seeded schedule, the stalls it measures, the start
of a stored run found again, the load summary."""

from __future__ import annotations

import pytest
from bench.chaos import _load_summary, _start_matching
from bench.chaos_checks import fault_effects, longest_stall
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
    assert _load_summary([4.0, 20.5, 9.0]) == {"min": 4.0, "mean": 11.2, "max": 20.5}
    assert _load_summary([]) == {}


def test_a_fault_s_own_stall_stops_at_the_next_fault() -> None:
    # orders settle every second but not from 12 to 20 (during the first fault) nor from
    # 42 to 80 (during the second, injected at 40: the first's window ends there).
    settled = [s for s in range(1, 100) if not (12 < s < 20 or 42 < s < 80)]
    times = {str(s): (s - 0.5, float(s)) for s in settled}
    times["slow"] = (11.0, 79.5)  # one order waits across both
    faults = [{"kind": "a", "started": 10.0, "healed": 15.0},
              {"kind": "b", "started": 40.0, "healed": 45.0}]  # fmt: skip
    fault_effects(faults, times, t0=0.0)
    assert faults[0]["own_stall_s"] == 8.0  # 12 -> 20, not the 37 s of the second
    assert faults[0]["stall_s"] == 37.5  # its recovery window reaches into the second (42 -> 79.5)
    assert faults[1]["own_stall_s"] == 33.0  # 42 -> heal + 30 s = 75


def test_a_stored_run_s_start_is_found_from_its_stored_timings() -> None:
    # the first order placed 3 s after the start; settlements stop during each fault
    times = {str(i): (103.0 + i, 104.0 + i + (20 if 30 <= i <= 34 or 60 <= i <= 62 else 0))
             for i in range(100)}  # fmt: skip
    faults = [{"kind": "a", "started": 31.0, "healed": 36.0},
              {"kind": "b", "started": 61.0, "healed": 63.0}]  # fmt: skip
    fault_effects(faults, times, t0=100.0)
    assert abs(_start_matching(faults, times) - 100.0) < 0.06
    faults[0]["recovery_s"] += 30  # timings of another run's data: no start fits
    with pytest.raises(RuntimeError, match="no start within 20 s"):
        _start_matching(faults, times)
