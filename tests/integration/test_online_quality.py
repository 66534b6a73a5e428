"""A worker's live online quality equals ``streamrec eval``'s figures for ``streamrec`` on the same replayed log.

The log (a synthetic shop whose items have no text, so no text model is needed) is published into the real local
broker and applied by a real worker process; its ``/stats["online_quality"]`` and ``/metrics`` are then compared
with :func:`~streamrec.lab.evaluation.evaluate` on the same records with the protocol the worker measures
(``protocol="published"``): every item event scored against the list last published to its user, before
learning, with the profile's bounded discovery rule.

Tolerance: none. Counts must be equal and every mean equal to 1e-12 (they are computed from equal counts).
That holds because both apply the same events in the same order and the same batches:

* the worker runs with ``STREAMREC_BATCH_SIZE=1``: its batches are whatever has arrived, so only batches of one
  event are the same in every run (larger batches change which list each event is scored against);
* every event goes to partition 0 of ``events`` and every embedding to partition 0 of ``item-embeddings``, so the
  worker applies them in the log's order (one worker interleaves six partitions' backlogs in an order no replay
  reproduces, which moves popularity, co-visitation and the ranker a little between two users' events);
* the item embeddings are the ones the encoder would publish for text-less items
  (:func:`~streamrec.encoding.encoder.fallback_embeddings`, what ``evaluate`` computes too), all published
  before the worker starts, so the catalogue is complete before the first event, as in the replay.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamrec.encoding.encoder import fallback_embeddings
from streamrec.io.kafka import make_producer
from streamrec.io.logs import Record
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.evaluation import evaluate
from streamrec.lab.processes import Service, wait_for_services, worker_stats
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.model.events import dumps, item_from_dict
from streamrec.settings import Settings
from streamrec.worker.telemetry import parse

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITEMS = 200
USERS = 120
EVENTS = 1_500
CATEGORIES = 8
DRAIN_TIMEOUT_S = 300.0
MEAN_TOLERANCE = 1e-12


def textless_shop() -> list[Record]:
    """The replay log: the catalogue first, then the events in time order (searches left out: the worker would
    embed them with the text model, the harness without it)."""
    shop = make_shop(ITEMS, USERS, seed=11)
    items = [
        dataclasses.replace(item, title="", description="", brand=None, category=str(n % CATEGORIES))
        for n, item in enumerate(shop.items)
    ]
    events = [e for e in make_events(shop, EVENTS, seed=11, start_ts=1_000.0) if e.type != "search"]
    return [Record("items", i.item_id, i.to_dict(), i.ts) for i in items] + [
        Record("events", e.user_id, e.to_dict(), e.ts) for e in events
    ]


async def publish_in_order(settings: Settings, records: list[Record]) -> None:
    """Item embeddings, then events, each to partition 0 of its topic, in the log's order."""
    items = [r for r in records if r.topic == "items"]
    embeddings = fallback_embeddings([item_from_dict(r.value) for r in items], settings)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for emb in embeddings:
            await producer.send(
                settings.kafka.topic("item-embeddings"),
                dumps(emb.to_dict()),
                key=emb.item.item_id.encode(),
                partition=0,
            )
        for r in records:
            if r.topic == "events":
                await producer.send(settings.kafka.topic("events"), dumps(r.value), key=r.key.encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def metrics_page(settings: Settings) -> dict[str, float]:
    url = f"http://{settings.web.web_host}:{settings.web.web_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return parse(await resp.text())


def test_live_online_quality_equals_the_published_protocol_of_eval(broker: LocalBroker, tmp_path: Path) -> None:
    records = textless_shop()
    n_events = sum(r.topic == "events" for r in records)
    settings = Settings.of(
        broker=broker.url,
        topic_prefix="online-quality.",
        app_id="online-quality",
        web_port=free_port(),
        data_dir=str(tmp_path / "data"),
        batch_size=1,
    )
    asyncio.run(apply_topics(settings.kafka))
    asyncio.run(publish_in_order(settings, records))
    worker = Service("worker", ["worker", "--loglevel", "warning"], settings, tmp_path).start()
    try:

        async def drained() -> dict[str, Any] | None:
            stats = await worker_stats(settings)
            return stats if stats is not None and stats["events"] >= n_events else None

        live = asyncio.run(wait_for_services(drained, DRAIN_TIMEOUT_S, "the log to be applied", [worker]))
        samples = asyncio.run(metrics_page(settings))
    finally:
        assert worker.stop() == 0, worker.tail(40)

    assert live["events"] == n_events and live["duplicates_skipped"] == 0
    report = evaluate(records, settings, ["streamrec"], k=20, progress=False, protocol="published", batch_size=1)
    offline = report.systems["streamrec"]
    online = live["online_quality"]
    assert online["k"] == report.k == 20
    assert (online["scored"], online["scored_all"]) == (offline["scored"], offline["scored_all"])
    for name in ("recall", "ndcg", "mrr", "recall_all", "ndcg_all", "mrr_all"):
        assert online[name] == pytest.approx(offline[name], abs=MEAN_TOLERANCE), name
    # not a vacuous equality: most events were scored, a fair share of them hits, repeats among them
    assert online["scored_all"] > 0.9 * n_events and online["recall"] > 0.1 and online["scored"] < online["scored_all"]
    assert online["window"]["scored_all"] == online["scored_all"]  # the window (10,000) holds every scored event
    # /metrics counts the same events, by kind and discovery
    scored = {k: v for k, v in samples.items() if k.startswith("streamrec_online_scored_total{")}
    hits = {k: v for k, v in samples.items() if k.startswith("streamrec_online_hits_total{")}
    assert sum(scored.values()) == online["scored_all"]
    assert sum(hits.values()) == round(online["recall_all"] * online["scored_all"])
    behaviour_discovery = 'kind="behaviour",discovery="discovery"'
    assert scored[f"streamrec_online_scored_total{{{behaviour_discovery}}}"] == online["scored"]
    assert samples[f"streamrec_online_hit_rank_count{{{behaviour_discovery}}}"] == round(
        online["recall"] * online["scored"]
    )
    assert set(live["ranker_weights"]) >= {"sim_long", "popularity"} and live["model_steps"] > 0
