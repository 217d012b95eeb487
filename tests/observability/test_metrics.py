"""Each service process serves Prometheus metrics whose values agree with the log.

Scraped over HTTP from the running processes of the observed shop, then checked against
what the log holds: what a group consumed equals what was published to its topics, what
a service published equals what its topics hold, the handler histogram counts every
handling, lag drops to zero once the shop is idle, and the one held payment is counted
as a dead letter.
"""

from __future__ import annotations

import collections
import itertools
import time

import httpx
from observed_shop import ObservedRun, read_log, wait_for
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(run: ObservedRun, service: str) -> tuple[str, list[Sample]]:
    response = httpx.get(run.metrics_url(service), timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
    return response.text, samples


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_endpoints_agree_with_the_log(observed: ObservedRun) -> None:
    log = read_log(observed.shop.broker)
    per_topic = collections.Counter(topic for topic, _ in log)
    per_type = collections.Counter(env.type for topic, env in log if not topic.endswith(".dlq"))
    consumes = {
        "inventory": ["shop.orders", "shop.billing"],
        "billing": ["shop.inventory"],
        "order": ["shop.inventory", "shop.billing"],
    }
    publishes = {  # each service is the one producer of its topics (billing: its ledger too)
        "order": ["shop.orders"],
        "inventory": ["shop.inventory"],
        "billing": ["shop.billing", "shop.accounts"],
    }

    started = time.time()

    def idle(service: str) -> list[Sample] | None:
        _, samples = scrape(observed, service)
        if value(samples, "tidings_metrics_sampled_timestamp_seconds") < started:
            return None  # lag and backlog are sampled: wait for a sample taken from now on
        lag = [s for s in samples if s.name == "tidings_consumer_lag"]
        topics = {s.labels["topic"] for s in lag}
        if not set(consumes[service]) <= topics or any(s.value for s in lag):
            return None
        if value(samples, "tidings_outbox_backlog") != 0:
            return None
        consumed = sum(
            value(samples, "tidings_events_consumed_total", topic=t) for t in consumes[service]
        )
        if consumed < sum(per_topic[t] for t in consumes[service]):
            return None
        return samples

    for service in ("order", "inventory", "billing"):
        samples = wait_for(lambda s=service: idle(s), 10, f"{service}'s metrics to settle")
        # Consumed: every record of the group's topics, exactly once each.
        for topic in consumes[service]:
            assert (
                value(samples, "tidings_events_consumed_total", consumer_group=service, topic=topic)
                == per_topic[topic]
            ), (service, topic)
        # Published: what its topics hold.
        assert value(samples, "tidings_events_published_total", service=service) == sum(
            per_topic.get(t, 0) for t in publishes[service]
        )
        # Lag per group and partition: every partition of every subscribed topic, now 0.
        lag = {
            (s.labels["topic"], s.labels["partition"]): s.value
            for s in samples
            if s.name == "tidings_consumer_lag"
        }
        for topic in consumes[service]:
            assert {p for t, p in lag if t == topic} == {"0", "1", "2"}
        assert set(lag.values()) == {0.0}
        assert value(samples, "tidings_outbox_backlog", service=service) == 0
        assert value(samples, "tidings_metrics_sampled_timestamp_seconds") > 1.7e9

    _, inventory = scrape(observed, "inventory")
    placed = per_type["OrderPlaced"]
    assert placed == len(observed.placed)
    assert (
        value(
            inventory, "tidings_events_consumed_total", event_type="OrderPlaced", outcome="handled"
        )
        == placed
    )
    # OrderCompleted/OrderCancelled share the topic but inventory has no handler for them.
    assert (
        value(inventory, "tidings_events_consumed_total", topic="shop.orders", outcome="skipped")
        == per_type["OrderCompleted"] + per_type["OrderCancelled"]
    )
    assert value(inventory, "tidings_events_published_total", event_type="InventoryRejected") == 1

    # The handler-duration histogram: one observation per handling, cumulative buckets.
    count = value(inventory, "tidings_handler_duration_seconds_count", event_type="OrderPlaced")
    total = value(inventory, "tidings_handler_duration_seconds_sum", event_type="OrderPlaced")
    assert count == placed
    assert 0 < total < count * 1.0  # seconds: well under a second each
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in inventory
        if s.name == "tidings_handler_duration_seconds_bucket"
        and s.labels["event_type"] == "OrderPlaced"
    )
    assert buckets[-1] == (float("inf"), count)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))

    # Billing: the held payment was dead-lettered at once, not retried.
    text, billing = scrape(observed, "billing")
    assert (
        value(
            billing,
            "tidings_dead_letters_total",
            consumer_group="billing",
            topic="shop.inventory",
            reason="non_recoverable",
        )
        == 1
    )
    assert (
        value(
            billing,
            "tidings_events_consumed_total",
            event_type="InventoryReserved",
            outcome="dead_lettered",
        )
        == 1
    )
    assert value(billing, "tidings_handler_retries_total") == 0
    assert "# TYPE tidings_handler_retries_total counter" in text
    assert "# HELP tidings_consumer_lag Records in a partition" in text
