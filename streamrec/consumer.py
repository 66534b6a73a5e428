"""Reading recommendations back: the consumer side a product service would copy.

``latest_recommendation`` reads only the partition that holds the user's key (the default Kafka partitioner,
murmur2 — the same one every Kafka client uses for keyed messages) and returns the newest list for the user.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from .kafka import make_consumer, partitions_of, read_to_end
from .settings import Settings


async def latest_recommendation(settings: Settings, user_id: str) -> dict[str, Any] | None:
    """Newest recommendation message for ``user_id`` (None if there is none or it was deleted)."""
    topic = settings.topic("recommendations")
    key = user_id.encode()
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        if not tps:
            return None
        ids = [tp.partition for tp in tps]
        partition = DefaultPartitioner()(key, ids, ids)
        latest: dict[str, Any] = {}

        def keep(record: ConsumerRecord) -> None:
            if record.key == key:
                latest["value"] = record.value

        await read_to_end(settings, topic, keep, consumer=consumer, partitions=[TopicPartition(topic, partition)])
        value = latest.get("value")
        return None if value is None else orjson.loads(value)
    finally:
        await consumer.stop()
