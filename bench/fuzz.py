"""``python -m bench.fuzz [--cases N]`` (``make fuzz``): fuzz the codec and the consume path.

Two parts, one report (bench/results/fuzz.json: cases, crashes, hangs, dead_lettered,
handled, skipped, and the time each part took):

1. **The bulk**: N records (default 1,000,000) garbled by :class:`tidings.testing.fuzz.Mutator`,
   each settled for one of the shop's services by :func:`tidings.testing.fuzz.settle`
   (decode, dispatch, upcast, validate, dead letter; one in 100 builds the full dead
   letter). A case slower than ``--bound`` seconds counts as a hang; an exception that
   escapes counts as a crash (the first few are kept in the report). A watchdog ends the
   process with every thread's traceback if one case runs for a minute.
2. **The structure**: ``--examples`` Hypothesis batches of :func:`tidings.testing.fuzz.records`
   through the shop's real runtimes (:class:`tidings.testing.TestApp`, memory broker,
   SQLite stores): every record must end handled, skipped or dead-lettered with a reason.

Exit status 1 if anything crashed or hung.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from shop import billing, inventory, order
from shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentProcessed,
)
from tidings.messages import Message
from tidings.records import Record
from tidings.service import Service
from tidings.testing.fuzz import Mutator, Tally, consume, records, seed_records, settle

RESULTS = Path(__file__).parent / "results"
SERVICES: list[Service] = [order.service, inventory.service, billing.service]
WATCHDOG_SECONDS = 60


def shop_seeds() -> list[Message]:
    """One valid event of each type the shop's services handle."""
    lines = [OrderLine(sku="widget", quantity=2), OrderLine(sku="gizmo", quantity=1)]
    return [
        OrderPlaced(order_id="o1", customer_id="c1", lines=lines, amount_cents=3750),
        InventoryReserved(order_id="o1", customer_id="c1", lines=lines, amount_cents=3750),
        InventoryRejected(order_id="o1", reason="out of stock"),
        InventoryReleased(order_id="o1", lines=lines, reason="payment failed"),
        PaymentProcessed(order_id="o1", payment_id="p1", customer_id="c1", amount_cents=3750),
        PaymentFailed(order_id="o1", customer_id="c1", reason="card declined"),
    ]


def bulk(cases: int, seed: int, bound: float) -> tuple[Tally, list[str], float]:
    rng = random.Random(seed)
    mutate = Mutator(seed_records(shop_seeds()), rng)
    tally = Tally()
    crashes: list[str] = []
    started = time.perf_counter()
    for n in range(cases):
        if n % 1000 == 0:
            faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
        record = mutate()
        service = SERVICES[n % len(SERVICES)]
        t0 = time.perf_counter()
        try:
            outcome, _ = settle(service, record, build_letter=n % 100 == 0)
        except Exception as exc:  # the point of the exercise: nothing may escape
            tally.crashes += 1
            if len(crashes) < 10:
                crashes.append(f"{service.name}: {type(exc).__name__}: {exc} <- {_show(record)}")
            continue
        finally:
            tally.cases += 1
            if time.perf_counter() - t0 > bound:
                tally.hangs += 1
        setattr(tally, outcome, getattr(tally, outcome) + 1)
        if n and n % 100_000 == 0:
            rate = n / (time.perf_counter() - started)
            print(f"  {n:,} cases, {rate:,.0f}/s, {tally.crashes} crashes", flush=True)
    faulthandler.cancel_dump_traceback_later()
    return tally, crashes, time.perf_counter() - started


def structure(examples: int, seed: int) -> tuple[Tally, list[str], float]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tidings.testing import TestApp

    logging.getLogger("tidings").setLevel(logging.ERROR)  # a dead letter logs a warning each
    seeds = seed_records(shop_seeds())
    tally = Tally()
    crashes: list[str] = []
    started = time.perf_counter()

    async def run() -> None:
        async with TestApp(*SERVICES) as app:

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=False,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(st.lists(records(seeds), min_size=1, max_size=8))
            def example(batch: list[Record]) -> None:
                try:
                    tally.add(runner.run(consume(app, batch)))
                except TimeoutError:
                    tally.hangs += 1
                    crashes.append(f"hang on {[_show(r) for r in batch]}")
                except Exception as exc:
                    tally.crashes += 1
                    if len(crashes) < 10:
                        crashes.append(f"{type(exc).__name__}: {exc}")

            await asyncio.to_thread(example)

    # The examples run on a thread; each drives the app on this loop.
    loop = asyncio.new_event_loop()

    class _Runner:
        def run(self, coro: Any) -> Tally:
            return asyncio.run_coroutine_threadsafe(coro, loop).result()

    runner = _Runner()
    random.seed(seed)
    loop.run_until_complete(run())
    loop.close()
    return tally, crashes, time.perf_counter() - started


def _show(record: Record) -> str:
    return f"headers={dict(record.headers)!r:.200} value={record.value[:200]!r}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=1_000_000, help="records for the bulk")
    parser.add_argument("--examples", type=int, default=300, help="Hypothesis batches")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--bound", type=float, default=2.0, help="seconds a case may take")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    args = parser.parse_args(argv)
    print(f"== fuzz: {args.cases:,} garbled records through decode/dispatch/validate", flush=True)
    bulk_tally, bulk_crashes, bulk_seconds = bulk(args.cases, args.seed, args.bound)
    print(f"   {bulk_tally} in {bulk_seconds:.0f}s", flush=True)
    print(f"== fuzz: {args.examples} Hypothesis batches through the shop's runtimes", flush=True)
    hyp_tally, hyp_crashes, hyp_seconds = structure(args.examples, args.seed)
    print(f"   {hyp_tally} in {hyp_seconds:.0f}s", flush=True)
    total = Tally()
    total.add(bulk_tally)
    total.add(hyp_tally)
    report = {
        "cases": total.cases,
        "crashes": total.crashes,
        "hangs": total.hangs,
        "dead_lettered": total.dead_lettered,
        "handled": total.handled,
        "skipped": total.skipped,
        "bulk": {
            **vars(bulk_tally),
            "seconds": round(bulk_seconds, 1),
            "per_case_bound_s": args.bound,
        },
        "runtime": {**vars(hyp_tally), "seconds": round(hyp_seconds, 1), "examples": args.examples},
        "first_crashes": bulk_crashes + hyp_crashes,
        "seed": args.seed,
        "machine": "2 cores, shared",
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}: {total.cases:,} cases, {total.crashes} crashes, {total.hangs} hangs")
    return 1 if total.crashes or total.hangs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
