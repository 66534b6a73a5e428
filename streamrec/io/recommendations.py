"""Reading recommendations back: the consumer side a product service would copy.

``latest_recommendation`` reads only the partition that holds the user's key and returns the newest list for the
user. The workers publish ``recommendations`` with aiokafka, whose default partitioner is murmur2 of the key (as
the Java client's): a reader in another language must compute murmur2 too — its own client's default may be
another hash (librdkafka: CRC32; sarama: FNV-1a) — or read every partition.
:class:`RecommendationWatcher` follows the whole topic in the background (the demo and the benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streamrec.io.kafka import key_partition, make_consumer, partitions_of, read_to_end
from streamrec.settings import KafkaSettings

WATCH_POLL_MS = 100
WATCH_MAX_RECORDS = 10_000


async def latest_recommendation(kafka: KafkaSettings, user_id: str) -> dict[str, Any] | None:
    """Newest recommendation message for ``user_id`` (None if there is none or it was deleted)."""
    topic = kafka.topic("recommendations")
    key = user_id.encode()
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        tps = await partitions_of(kafka, consumer, topic)
        if not tps:
            return None
        partition = key_partition(key, [tp.partition for tp in tps])
        latest: dict[str, Any] = {}

        def keep(record: ConsumerRecord) -> None:
            if record.key == key:
                latest["value"] = record.value

        await read_to_end(kafka, topic, keep, consumer=consumer, partitions=[TopicPartition(topic, partition)])
        value = latest.get("value")
        return None if value is None else orjson.loads(value)
    finally:
        await consumer.stop()


class RecommendationWatcher:
    """Consumes ``recommendations`` from the beginning in the background.

    Per user it keeps the newest event time a list reflects (and, with ``keep_latest``, the list itself);
    while ``measure_latency`` is set it records receive time − ``event_ts`` for every list, and ``listener`` (if set)
    is called with every list and its receive time.
    """

    def __init__(self, kafka: KafkaSettings, keep_latest: bool = False) -> None:
        self.kafka = kafka
        self.keep_latest = keep_latest
        self.latest: dict[str, dict[str, Any]] = {}
        self.reflected: dict[str, float] = {}
        self.last_record_ms = 0
        """Broker timestamp of the newest list read (ms): when the last one was published."""
        self.count = 0
        self.measure_latency = False
        self.latencies_ms: list[float] = []
        self.latency_sent: list[float] = []
        """Each measured list's event time, beside ``latencies_ms``: when in a run the slow ones were sent."""
        self.listener: Callable[[dict[str, Any], float], None] | None = None
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = make_consumer(self.kafka)
        await self._consumer.start()
        tps = await partitions_of(self.kafka, self._consumer, self.kafka.topic("recommendations"))
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=WATCH_POLL_MS, max_records=WATCH_MAX_RECORDS)
            now = time.time()
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    rec = orjson.loads(r.value)
                    user, ts = rec["user_id"], rec["event_ts"]
                    if ts > self.reflected.get(user, -np.inf):
                        self.reflected[user] = ts
                    if self.keep_latest:
                        self.latest[user] = rec
                    self.last_record_ms = max(self.last_record_ms, r.timestamp)
                    self.count += 1
                    if self.measure_latency:
                        self.latencies_ms.append((now - ts) * 1000.0)
                        self.latency_sent.append(ts)
                    if self.listener is not None:
                        self.listener(rec, now)

    def missing(self, last_ts: dict[str, float]) -> int:
        """Users whose newest list does not yet reflect their last event (``last_ts``: user → event time)."""
        return sum(1 for u, ts in last_ts.items() if self.reflected.get(u, -np.inf) < ts)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
