"""End to end on the real local broker: encoder and recommender worker as separate processes.

One pipeline for the module; each step (catalogue, first events, a new item, learning) is a module fixture that
builds on the one before, so each test asks only for the steps it checks and runs alone too.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamrec.io.kafka import make_producer, read_to_end
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, worker_stats
from streamrec.lab.synthetic import make_shop
from streamrec.model.events import Event, Item, dumps
from streamrec.model.ranker import FEATURES, PRIOR_WEIGHTS
from streamrec.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_S = 120.0
BAD_ITEM = b'{"item_id": "x", "title": "negative price", "price": -4, "ts": 1}'


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def publish(settings: Settings, messages: list[tuple[str, str, bytes]]) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send(settings.kafka.topic(topic), value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str) -> list[Any]:
    records: list[Any] = []
    await read_to_end(settings.kafka, settings.kafka.topic(topic), records.append)
    return records


def wait_for(check: Callable[[], Any], what: str, services: list[Service], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for s in services:
            assert s.alive, f"{s.name} died while waiting for {what}:\n{s.tail(60)}"
        time.sleep(0.3)
    logs = "\n".join(f"--- {s.name}\n{s.tail(40)}" for s in services)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def latest_recs(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every recommendation message, grouped by user, in publication order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in run(read_all(settings, "recommendations")):
        if r.value is not None:
            rec = orjson.loads(r.value)
            out.setdefault(rec["user_id"], []).append(rec)
    return out


def items_listed_for(settings: Settings, user: str) -> set[str]:
    """Every item in any list published for ``user`` so far."""
    return {i["item_id"] for rec in latest_recs(settings).get(user, []) for i in rec["items"]}


def event(user: str, etype: str, item: str, ts: float) -> tuple[str, str, bytes]:
    return ("events", user, dumps(Event(user, etype, ts, item_id=item).to_dict()))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[Service]]]:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings.of(
            broker=broker.url,
            app_id="e2e",
            web_port=free_port(),
            data_dir=str(workdir / "data"),
            snapshot_interval_s=1.0,
            encoder_processes=2,
        )
        run(apply_topics(settings.kafka))
        services = [
            Service("encoder", ["encoder"], settings, workdir).start(),
            Service("worker", ["worker", "--loglevel", "warning"], settings, workdir).start(),
        ]
        try:
            yield settings, services
        finally:
            helpers = {s.name: spawned_children(s.process.pid) for s in services}
            codes = {s.name: s.stop() for s in services}
            assert codes == {"encoder": 0, "worker": 0}, codes
            # the encoder's second process and the worker's core process stop with them
            assert [len(pids) for pids in helpers.values()] == [1, 1], helpers
            time.sleep(1.0)
            assert [pid for pids in helpers.values() for pid in pids if Path(f"/proc/{pid}").exists()] == []


def spawned_children(parent: int) -> list[int]:
    """Pids of the multiprocessing children (``spawn_main``) of a process."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return out


@dataclass(frozen=True)
class Shop:
    """The catalogue published at the start: 80 synthetic items in a handful of categories."""

    items: list[Item]
    category: dict[str, str | None]
    by_cat: dict[str, list[str]]


@dataclass(frozen=True)
class FirstEvents:
    """Two users with one clear taste each, a malformed event in the middle and a search, once applied."""

    valid_events: int
    bad_event: bytes
    search: Event
    stats: dict[str, Any]
    """The worker's /stats once every valid event was applied."""
    recs: dict[str, list[dict[str, Any]]]
    """Every list published by then, per user."""


@pytest.fixture(scope="module")
def shop() -> Shop:
    items = make_shop(n_items=80, n_users=0, seed=3, ts=1_000.0).items
    by_cat: dict[str, list[str]] = {}
    for item in items:
        by_cat.setdefault(item.category or "", []).append(item.item_id)
    return Shop(items, {i.item_id: i.category for i in items}, by_cat)


@pytest.fixture(scope="module")
def catalogue(pipeline: tuple[Settings, list[Service]], shop: Shop) -> dict[str, Any]:
    """The catalogue, with one malformed item upsert among the valid ones, indexed: the worker's /stats then."""
    settings, services = pipeline
    run(publish(settings, [("items", i.item_id, dumps(i.to_dict())) for i in shop.items] + [("items", "x", BAD_ITEM)]))
    return wait_for(
        lambda: (s := run(worker_stats(settings))) and s["items_indexed"] >= len(shop.items) and s, "indexing", services
    )


@pytest.fixture(scope="module")
def first_events(pipeline: tuple[Settings, list[Service]], shop: Shop, catalogue: dict[str, Any]) -> FirstEvents:
    settings, services = pipeline
    bad_event = b'{"user_id": "mallory", "item_id": "i", "type": "view", "ts": 5'  # truncated JSON
    coffee, laptops = shop.by_cat["coffee"], shop.by_cat["laptops"]
    messages = [event("alice", t, coffee[n], 2_000.0 + n) for n, t in enumerate(["view", "click", "purchase"] * 2)]
    messages.append(("events", "mallory", bad_event))
    messages += [event("bob", t, laptops[n], 2_000.0 + n) for n, t in enumerate(["view", "click", "add_to_cart"] * 2)]
    search = Event("carol", "search", 2_010.0, query="noise cancelling headphones")
    messages.append(("events", "carol", dumps(search.to_dict())))
    run(publish(settings, messages))
    valid_events = len(messages) - 1
    stats = wait_for(
        lambda: (s := run(worker_stats(settings))) and s["events"] >= valid_events and s, "events", services
    )
    recs = wait_for(
        lambda: (r := latest_recs(settings)) and {"alice", "bob", "carol"} <= r.keys() and r, "recs", services
    )
    return FirstEvents(valid_events, bad_event, search, stats, recs)


@pytest.fixture(scope="module")
def new_item(pipeline: tuple[Settings, list[Service]], shop: Shop, first_events: FirstEvents) -> Item:
    """A new item, published while everything runs, and one more view by alice (a coffee drinker), until the
    item is in one of her lists."""
    settings, services = pipeline
    new = Item(
        "fresh-espresso", "Barista dark roast espresso coffee beans", 3_000.0, "Rich crema.", "coffee", "Roastery", 14.0
    )
    run(publish(settings, [("items", new.item_id, dumps(new.to_dict()))]))
    wait_for(
        lambda: (s := run(worker_stats(settings))) and s["items_indexed"] >= len(shop.items) + 1, "new item", services
    )
    run(publish(settings, [event("alice", "view", shop.by_cat["coffee"][0], 3_001.0)]))
    wait_for(lambda: new.item_id in items_listed_for(settings, "alice"), "the new item in alice's lists", services)
    return new


@pytest.fixture(scope="module")
def learned(pipeline: tuple[Settings, list[Service]], new_item: Item) -> dict[str, Any]:
    """Alice takes items from her list (labelled events on items the ranker offered: online SGD steps); the
    newest model snapshot once there is one."""
    settings, services = pipeline
    offered = [i["item_id"] for i in latest_recs(settings)["alice"][-1]["items"]]
    run(
        publish(
            settings, [event("alice", "click", offered[3], 3_002.0), event("alice", "add_to_cart", offered[5], 3_003.0)]
        )
    )
    snaps = wait_for(
        lambda: [orjson.loads(r.value) for r in run(read_all(settings, "model-snapshots")) if r.value],
        "a model snapshot",
        services,
    )
    return snaps[-1]


def test_the_catalogue_is_indexed_without_the_malformed_item(catalogue: dict[str, Any], shop: Shop) -> None:
    assert catalogue["items_indexed"] == len(shop.items)


def test_valid_events_are_applied_and_the_malformed_one_rejected(first_events: FirstEvents) -> None:
    assert first_events.stats["events"] == first_events.valid_events
    assert first_events.stats["dead_letters"] == 1  # the bad item upsert is rejected by the encoder, not the worker


def test_each_user_gets_a_list_in_their_taste(
    pipeline: tuple[Settings, list[Service]], shop: Shop, first_events: FirstEvents
) -> None:
    settings, _ = pipeline
    alice, bob = first_events.recs["alice"][-1], first_events.recs["bob"][-1]
    assert len(alice["items"]) == settings.retrieval.top_k and len(bob["items"]) == settings.retrieval.top_k
    assert shop.category[alice["items"][0]["item_id"]] == "coffee"
    assert shop.category[bob["items"][0]["item_id"]] == "laptops"
    # alice purchased three coffees: never recommended again
    purchased = {shop.by_cat["coffee"][2], shop.by_cat["coffee"][5]}
    assert not purchased & {i["item_id"] for i in alice["items"]}
    assert all(i["reasons"] for i in alice["items"][:3])


def test_a_search_gets_a_list_for_its_query(shop: Shop, first_events: FirstEvents) -> None:
    carol = first_events.recs["carol"][-1]
    assert carol["kind"] == "search" and carol["query"] == first_events.search.query
    assert shop.category[carol["items"][0]["item_id"]] == "headphones"


def test_malformed_messages_are_dead_lettered_with_their_bytes_and_a_reason(
    pipeline: tuple[Settings, list[Service]], first_events: FirstEvents
) -> None:
    settings, _ = pipeline
    dead = [orjson.loads(r.value) for r in run(read_all(settings, "dead-letters"))]
    by_source = {d["source_topic"]: d for d in dead}
    events, items = settings.kafka.topic("events"), settings.kafka.topic("items")
    assert set(by_source) == {events, items}
    assert base64.b64decode(by_source[events]["value_b64"]) == first_events.bad_event
    assert by_source[events]["reason"].startswith("malformed JSON")
    assert base64.b64decode(by_source[items]["value_b64"]) == BAD_ITEM
    assert "'price' must be >= 0" in by_source[items]["reason"]


def test_a_new_item_reaches_a_matching_user_without_a_restart(
    pipeline: tuple[Settings, list[Service]], new_item: Item
) -> None:
    settings, _ = pipeline
    assert new_item.item_id in items_listed_for(settings, "alice")


def test_online_learning_moves_the_model_away_from_the_priors(
    learned: dict[str, Any], first_events: FirstEvents
) -> None:
    assert learned["steps"] > 0 and learned["version"] == f"fusion@{learned['steps']}"
    prior = [PRIOR_WEIGHTS[f] for f in FEATURES]
    assert max(abs(a - b) for a, b in zip(learned["params"]["weight"], prior, strict=True)) > 1e-4
    assert first_events.recs["alice"][-1]["model_version"].startswith("fusion@")


def test_the_consumer_example_reads_back_the_newest_list(
    pipeline: tuple[Settings, list[Service]], first_events: FirstEvents
) -> None:
    """What services copy (`streamrec recs`)."""
    from streamrec.io.recommendations import latest_recommendation

    settings, _ = pipeline
    newest = run(latest_recommendation(settings.kafka, "bob"))
    assert newest == latest_recs(settings)["bob"][-1]
    assert run(latest_recommendation(settings.kafka, "nobody")) is None


def test_metrics_agree_with_the_worker_counters_and_status_reads_them(
    pipeline: tuple[Settings, list[Service]], shop: Shop, first_events: FirstEvents, learned: dict[str, Any]
) -> None:
    """/metrics (Prometheus text) after alice's three later events, and `streamrec status` reading it."""
    import urllib.request

    from streamrec.worker.telemetry import format_status, parse

    settings, services = pipeline
    applied = first_events.valid_events + 3
    wait_for(lambda: (s := run(worker_stats(settings))) and s["events"] >= applied, "alice's later events", services)
    url = f"http://{settings.web.web_host}:{settings.web.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        samples = parse(resp.read().decode())
    stats = run(worker_stats(settings))
    assert stats is not None
    assert samples["streamrec_events_total"] == stats["events"] == applied
    assert samples["streamrec_dead_letters_total"] == 1
    assert samples["streamrec_event_to_recommendation_ms_count"] == applied
    assert samples['streamrec_event_to_recommendation_ms_bucket{le="+Inf"}'] == applied
    assert samples["streamrec_items_indexed"] == len(shop.items) + 1
    assert samples["streamrec_model_steps"] >= learned["steps"]
    assert samples["streamrec_consumer_lag_total"] == 0
    assert samples["streamrec_users"] == 3  # alice, bob, carol: mallory's only event was rejected
    shown = format_status(samples)
    assert f"events applied             {applied}" in shown
