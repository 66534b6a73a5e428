"""The collector against fake workers over real HTTP (no broker): rates, lag, latency, quality, discovery, users."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from streamrec.dashboard import collector as collector_module
from streamrec.dashboard.collector import EXPLAIN_UNAVAILABLE, BadLookup, Collector
from streamrec.io.kafka import key_partition
from streamrec.settings import KafkaSettings, Settings
from tests.dashboard.fake_worker import FakeWorker, serving


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow answer on a busy test machine must not count as a worker that is down."""
    monkeypatch.setattr(collector_module, "HTTP_TIMEOUT_S", 10.0)
    monkeypatch.setattr(collector_module, "STATS_EVERY_S", 0.0)  # /stats at every poll unless a test says otherwise


def make_collector(*workers: FakeWorker) -> Collector:
    urls = ",".join(w.url for w in workers)
    return Collector(Settings.of(dashboard_workers=urls), follow_topics=False)


async def polls(c: Collector, steps: list[tuple[float, Any]]) -> None:
    """Apply each step's change to the fake workers, then poll at its time."""
    await c.start(background=False)
    try:
        for t, change in steps:
            change()
            await c.poll_once(t)
    finally:
        await c.stop()


def test_rates_lag_and_latency_per_round() -> None:
    async def go() -> tuple[dict[str, Any], str, str]:
        a, b = FakeWorker(events=0, lag={0: 5, 1: 0}), FakeWorker(events=10, lag={2: 1})
        async with serving(a, b):
            c = make_collector(a, b)

            def busy() -> None:
                a.events, a.lag = 20, {0: 2, 1: 0}
                for _ in range(10):
                    a.latency.observe(12.0)

            def more() -> None:
                a.events = 60

            t0 = time.time() - 4.0
            await polls(c, [(t0, lambda: None), (t0 + 2.0, busy), (t0 + 4.0, more)])
            return c.overview(), a.url, b.url

    o, ua, ub = asyncio.run(go())
    s = o["series"]
    assert set(s["events_per_s"]) == {ua, ub}
    assert s["events_per_s"][ua] == [None, 10.0, 20.0]
    assert s["events_per_s"][ub] == [None, 0.0, 0.0]
    assert s["lag"][ua] == [5.0, 2.0, 2.0] and s["lag"][ub] == [1.0, 1.0, 1.0]
    assert s["p50"] == [None, pytest.approx(12.5), None]  # no events in the last round: no quantile
    lat = o["latency"]
    assert lat["window"] == "last 60 s" and lat["events"] == 10.0
    assert lat["counts"][lat["le"].index("15")] == 10.0 and sum(lat["counts"]) == 10.0
    assert o["totals"]["events"] == 70 and o["totals"]["events_per_s"] == 20.0 and o["totals"]["lag"] == 3.0
    rows = {w["url"]: w for w in o["workers"]}
    assert rows[ua]["lag"] == {"0": 2.0, "1": 0.0} and rows[ua]["up"]


def test_a_worker_that_stops_answering_shows_as_down_and_keeps_its_last_reading() -> None:
    async def go() -> tuple[dict[str, Any], str]:
        a, b = FakeWorker(events=1), FakeWorker(events=2)
        async with serving(a):
            async with serving(b):
                c = make_collector(a, b)
                await c.start(background=False)
                await c.poll_once(1.0)
            await c.poll_once(3.0)  # b is gone now
            await c.stop()
            return c.overview(), b.url

    o, gone = asyncio.run(go())
    row = next(w for w in o["workers"] if w["url"] == gone)
    assert (row["up"], row["events"]) == (False, 2.0) and row["error"]
    assert (o["totals"]["workers_up"], o["totals"]["workers"], o["totals"]["events"]) == (1, 2, 1.0)


def test_online_quality_per_interval_summed_over_workers() -> None:
    async def go() -> dict[str, Any]:
        a, b = FakeWorker(), FakeWorker()
        async with serving(a, b):
            c = make_collector(a, b)

            def first() -> None:
                a.stats = {"online_quality": {"k": 20, "scored": 100, "recall": 0.2, "ndcg": 0.1}}
                b.stats = {"online_quality": {"k": 20, "scored": 50, "recall": 0.4, "ndcg": 0.2}}

            def second() -> None:
                a.stats = {"online_quality": {"k": 20, "scored": 200, "recall": 0.3, "ndcg": 0.1}}  # 40 hits in 100
                b.stats = {"online_quality": {"k": 20, "scored": 150, "recall": 0.2, "ndcg": 0.2}}  # 10 hits in 100

            await polls(c, [(1.0, first), (3.0, second)])
            return c.overview()["quality"]

    q = asyncio.run(go())
    assert q["available"] and q["k"] == 20
    assert q["recall"] == [None, pytest.approx(0.25)]  # (40 + 10) / 200
    assert q["ndcg"] == [None, pytest.approx(0.15)]  # (10 + 20) / 200
    assert q["overall"]["scored"] == 350 and q["overall"]["recall"] == pytest.approx((60 + 30) / 350)


def test_without_online_quality_the_page_is_told_it_is_unavailable() -> None:
    async def go() -> dict[str, Any]:
        a = FakeWorker()
        async with serving(a):
            c = make_collector(a)
            await polls(c, [(1.0, lambda: None), (3.0, lambda: None)])
            return c.overview()

    o = asyncio.run(go())
    assert o["quality"]["available"] is False and o["quality"]["recall"] == [None, None]
    assert o["weights"]["source"] is None


def test_ranker_weights_from_stats() -> None:
    async def go() -> dict[str, Any]:
        a = FakeWorker(stats={"ranker_weights": {"price": 0.5, "seen": -0.1}})
        async with serving(a):
            c = make_collector(a)
            await polls(
                c, [(1.0, lambda: None), (3.0, lambda: a.stats.update(ranker_weights={"price": 0.6, "seen": 0}))]
            )
            return c.overview()["weights"]

    w = asyncio.run(go())
    assert w == {
        "source": "stats",
        "features": ["price", "seen"],
        "t": [1.0, 3.0],
        "values": {"price": [0.5, 0.6], "seen": [-0.1, 0.0]},
    }


def test_workers_are_discovered_from_model_snapshot_keys() -> None:
    async def go() -> dict[str, Any]:
        a = FakeWorker(events=4)
        async with serving(a):
            c = Collector(Settings(), follow_topics=False)
            c.weights.add_snapshot(f"fusion/{socket.gethostname()}:{a.port}".encode(), b"{}")
            c.weights.add_snapshot(b"fusion/custom-worker-name", b"{}")
            assert c.worker_urls() == [a.url]
            await polls(c, [(1.0, lambda: None)])
            o = c.overview()
            c.weights.add_snapshot(f"fusion/{socket.gethostname()}:{a.port}".encode(), None)
            await polls(c, [(3.0, lambda: None)])  # its key was deleted: no longer listed
            return {"first": o, "after": c.overview()}

    out = asyncio.run(go())
    assert out["first"]["discovery"] == "model-snapshots"
    assert [w["events"] for w in out["first"]["workers"]] == [4.0]
    assert out["after"]["workers"] == []


def test_time_series_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector_module, "HISTORY_POINTS", 3)

    async def go() -> dict[str, Any]:
        a = FakeWorker()
        async with serving(a):
            c = make_collector(a)

            def step() -> None:
                a.events += 4

            await polls(c, [(float(t), step) for t in range(0, 10, 2)])
            return c.overview()

    s = asyncio.run(go())["series"]
    assert s["t"] == [4.0, 6.0, 8.0] and list(s["events_per_s"].values()) == [[2.0, 2.0, 2.0]]


def test_user_lookup_lists_titles_and_asks_the_worker_that_holds_the_user() -> None:
    calls: list[str] = []

    async def read(kafka: KafkaSettings, user_id: str) -> dict[str, Any] | None:
        calls.append(user_id)
        if user_id != "u7":
            return None
        items = [{"item_id": "i1", "score": 1.5, "reasons": ["from a category you like"]}]
        return {"user_id": "u7", "kind": "behaviour", "items": items, "model_version": "v", "event_ts": 1.0}

    async def go() -> list[dict[str, Any]]:
        parts = list(range(6))
        holder = key_partition(b"u7", parts)
        a = FakeWorker(stats={"assigned_partitions": [p for p in parts if p != holder]})
        b = FakeWorker(stats={"assigned_partitions": [holder]})
        async with serving(a, b):
            c = make_collector(a, b)
            c.read_recommendation = read
            c.follower.partitions[c.settings.kafka.topic("events")] = parts
            c.catalogue.add(b'{"item_id": "i1", "title": "Espresso beans", "category": "coffee"}')
            await polls(c, [(1.0, lambda: None)])
            await c.start(background=False)
            try:
                older = await c.user("u7")
                b.explain = {
                    "user_id": "u7",
                    "top_categories": [{"category": "coffee", "weight": 2.0}],
                    "recent_items": [{"item_id": "i1", "ts": 1.0}],
                    "items": [{"item_id": "i1", "score": 1.5, "contributions": {"category": 1.0, "price": 0.5}}],
                }
                newer = await c.user("u7")
                nobody = await c.user("u8")
                with pytest.raises(BadLookup):
                    await c.user("")
                with pytest.raises(BadLookup):
                    await c.user("x" * 257)
            finally:
                await c.stop()
            assert b.explained[0] == "u7" and a.explained == []
            return [older, newer, nobody, {"holder": holder, "b": b.url}]

    older, newer, nobody, where = asyncio.run(go())
    assert older["recommendation"]["items"] == [
        {
            "item_id": "i1",
            "score": 1.5,
            "reasons": ["from a category you like"],
            "title": "Espresso beans",
            "category": "coffee",
        }
    ]
    assert (older["partition"], older["worker"]) == (where["holder"], where["b"])
    assert (older["explain"], older["explain_status"], older["explain_message"]) == (
        None,
        "unavailable",
        EXPLAIN_UNAVAILABLE,
    )
    assert newer["explain_status"] == "ok"
    assert newer["explain"]["items"][0]["contributions"] == {"category": 1.0, "price": 0.5}
    assert newer["explain"]["recent_items"][0]["title"] == "Espresso beans"
    assert nobody["recommendation"] is None
    assert calls == ["u7", "u7", "u8"]


def test_stats_are_read_less_often_than_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """/stats costs the worker a pass over its table: every STATS_EVERY_S, its last answer kept in between."""
    monkeypatch.setattr(collector_module, "STATS_EVERY_S", 10.0)

    async def go() -> tuple[FakeWorker, dict[str, Any]]:
        a = FakeWorker(
            stats={"assigned_partitions": [1], "online_quality": {"k": 5, "scored": 0, "recall": 0, "ndcg": 0}}
        )
        async with serving(a):
            c = make_collector(a)

            def later() -> None:
                a.events += 10
                a.stats = {
                    "assigned_partitions": [2],
                    "online_quality": {"k": 5, "scored": 10, "recall": 0.5, "ndcg": 0.3},
                }

            await polls(c, [(0.0, lambda: None), (2.0, later), (4.0, lambda: None), (10.0, lambda: None)])
            return a, c.overview()

    worker, o = asyncio.run(go())
    assert worker.stats_reads == 2  # at 0 s and 10 s; /metrics at every poll
    assert o["series"]["events_per_s"][worker.url] == [None, 5.0, 0.0, 0.0]
    assert o["workers"][0]["assigned_partitions"] == [2]
    assert o["quality"]["recall"] == [None, None, None, 0.5]  # one delta, from the two reads of /stats
