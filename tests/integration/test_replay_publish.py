"""Replaying a real log into the real local broker loses nothing and keeps per-user order."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamrec.io.kafka import read_to_end
from streamrec.io.logs import ReplayStats, publish, read_log
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def test_replay_taobao_into_kafka(broker: LocalBroker, taobao_path: Path) -> None:
    settings = Settings.of(broker=broker.url, topic_prefix="replay-test.")
    stats = ReplayStats()
    records = list(read_log(taobao_path, "taobao", limit=5_000, stats=stats))

    async def go() -> tuple[int, list[Any], list[Any]]:
        await apply_topics(settings.kafka)
        sent = await publish(records, settings.kafka, progress=False)
        events: list[Any] = []
        items: list[Any] = []
        await read_to_end(settings.kafka, settings.kafka.topic("events"), events.append)
        await read_to_end(settings.kafka, settings.kafka.topic("items"), items.append)
        return sent, events, items

    sent, events, items = asyncio.run(go())
    assert sent == len(records) == stats.events + stats.items
    assert (
        (len(events), len(items))
        == (stats.events, stats.items)
        == (5_000, len({r.key for r in records if r.topic == "items"}))
    )
    # keyed by user, and each user's events arrive in timestamp order within their partition
    per_user: dict[bytes, list[float]] = {}
    for e in events:
        value = orjson.loads(e.value)
        assert e.key == value["user_id"].encode()
        per_user.setdefault(e.key, []).append(value["ts"])
    assert all(ts == sorted(ts) for ts in per_user.values())
    expected = Counter(r.key.encode() for r in records if r.topic == "events")
    assert Counter({k: len(v) for k, v in per_user.items()}) == expected
