"""End to end on the real local broker: encoder and recommender worker as separate processes."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
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


def test_end_to_end(pipeline: tuple[Settings, list[Service]]) -> None:
    settings, services = pipeline
    shop = make_shop(n_items=80, n_users=0, seed=3, ts=1_000.0)
    category = {i.item_id: i.category for i in shop.items}
    by_cat: dict[str, list[str]] = {}
    for item in shop.items:
        by_cat.setdefault(item.category or "", []).append(item.item_id)

    # catalogue, with one malformed item upsert among the valid ones
    bad_item = b'{"item_id": "x", "title": "negative price", "price": -4, "ts": 1}'
    run(publish(settings, [("items", i.item_id, dumps(i.to_dict())) for i in shop.items] + [("items", "x", bad_item)]))
    wait_for(lambda: (s := run(worker_stats(settings))) and s["items_indexed"] >= len(shop.items), "indexing", services)

    # two users with one clear taste each, a malformed event in the middle, a search
    bad_event = b'{"user_id": "mallory", "item_id": "i", "type": "view", "ts": 5'  # truncated JSON
    coffee, laptops = by_cat["coffee"], by_cat["laptops"]
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
    assert stats["events"] == valid_events
    assert stats["dead_letters"] == 1  # the bad item upsert is rejected by the encoder, not the worker

    recs = wait_for(
        lambda: (r := latest_recs(settings)) and {"alice", "bob", "carol"} <= r.keys() and r, "recs", services
    )
    alice, bob, carol = recs["alice"][-1], recs["bob"][-1], recs["carol"][-1]
    assert len(alice["items"]) == settings.retrieval.top_k and len(bob["items"]) == settings.retrieval.top_k
    assert category[alice["items"][0]["item_id"]] == "coffee"
    assert category[bob["items"][0]["item_id"]] == "laptops"
    # alice purchased three coffees: never recommended again
    purchased = {coffee[2], coffee[5]}
    assert not purchased & {i["item_id"] for i in alice["items"]}
    assert carol["kind"] == "search" and carol["query"] == search.query
    assert category[carol["items"][0]["item_id"]] == "headphones"
    assert all(i["reasons"] for i in alice["items"][:3])

    # malformed messages are in dead-letters, with their original bytes and a reason
    dead = [orjson.loads(r.value) for r in run(read_all(settings, "dead-letters"))]
    by_source = {d["source_topic"]: d for d in dead}
    assert set(by_source) == {settings.kafka.topic("events"), settings.kafka.topic("items")}
    assert base64.b64decode(by_source[settings.kafka.topic("events")]["value_b64"]) == bad_event
    assert by_source[settings.kafka.topic("events")]["reason"].startswith("malformed JSON")
    assert base64.b64decode(by_source[settings.kafka.topic("items")]["value_b64"]) == bad_item
    assert "'price' must be >= 0" in by_source[settings.kafka.topic("items")]["reason"]

    # a new item, published while everything runs, reaches a matching user without a restart
    new = Item(
        "fresh-espresso", "Barista dark roast espresso coffee beans", 3_000.0, "Rich crema.", "coffee", "Roastery", 14.0
    )
    run(publish(settings, [("items", new.item_id, dumps(new.to_dict()))]))
    wait_for(
        lambda: (s := run(worker_stats(settings))) and s["items_indexed"] >= len(shop.items) + 1, "new item", services
    )
    run(publish(settings, [event("alice", "view", coffee[0], 3_001.0)]))
    wait_for(
        lambda: any(
            new.item_id in {i["item_id"] for i in rec["items"]} for rec in latest_recs(settings).get("alice", [])
        ),
        "the new item in alice's recommendations",
        services,
    )

    # alice takes items from her list: labelled events on items the ranker offered -> online SGD steps
    offered = [i["item_id"] for i in latest_recs(settings)["alice"][-1]["items"]]
    run(
        publish(
            settings, [event("alice", "click", offered[3], 3_002.0), event("alice", "add_to_cart", offered[5], 3_003.0)]
        )
    )

    # online learning happened: the snapshot topic holds parameters that moved away from the priors
    snaps = wait_for(
        lambda: [orjson.loads(r.value) for r in run(read_all(settings, "model-snapshots")) if r.value],
        "a model snapshot",
        services,
    )
    latest = snaps[-1]
    assert latest["steps"] > 0 and latest["version"] == f"fusion@{latest['steps']}"
    prior = [PRIOR_WEIGHTS[f] for f in FEATURES]
    assert max(abs(a - b) for a, b in zip(latest["params"]["weight"], prior, strict=True)) > 1e-4
    assert alice["model_version"].startswith("fusion@")

    # the consumer example services copy (`streamrec recs`) reads back the newest list for a user
    from streamrec.io.recommendations import latest_recommendation

    newest = run(latest_recommendation(settings.kafka, "bob"))
    assert newest == latest_recs(settings)["bob"][-1]
    assert run(latest_recommendation(settings.kafka, "nobody")) is None

    # /metrics (Prometheus text) agrees with the worker's own counters, and `streamrec status` reads it
    import urllib.request

    from streamrec.worker.telemetry import format_status, parse

    url = f"http://{settings.web.web_host}:{settings.web.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        samples = parse(resp.read().decode())
    stats = run(worker_stats(settings))
    assert stats is not None
    assert samples["streamrec_events_total"] == stats["events"] == valid_events + 3
    assert samples["streamrec_dead_letters_total"] == 1
    assert samples["streamrec_event_to_recommendation_ms_count"] == valid_events + 3
    assert samples['streamrec_event_to_recommendation_ms_bucket{le="+Inf"}'] == valid_events + 3
    assert samples["streamrec_items_indexed"] == len(shop.items) + 1
    assert samples["streamrec_model_steps"] >= latest["steps"]
    assert samples["streamrec_consumer_lag_total"] == 0
    assert samples["streamrec_users"] == 3  # alice, bob, carol: mallory's only event was rejected
    shown = format_status(samples)
    assert f"events applied             {valid_events + 3}" in shown
