"""partitions_of finds a topic created after its consumer started, and never creates a missing one."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamrec.io import kafka as kafka_io
from streamrec.io.kafka import client_kwargs, make_consumer, partitions_of
from streamrec.lab.broker import LocalBroker
from streamrec.settings import Settings

pytestmark = [pytest.mark.integration]

SHORT_DISCOVERY_S = 1.0


async def _discover(settings: Settings) -> tuple[list[TopicPartition], list[TopicPartition], list[TopicPartition]]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka))
    await admin.start()
    consumer = make_consumer(settings.kafka)
    try:
        await admin.create_topics([NewTopic("known", num_partitions=2, replication_factor=1)])
        await consumer.start()
        await admin.create_topics([NewTopic("later", num_partitions=3, replication_factor=1)])
        known = await partitions_of(settings.kafka, consumer, "known")
        later = await partitions_of(settings.kafka, consumer, "later")
        missing = await partitions_of(settings.kafka, consumer, "missing")
        assert "missing" not in await admin.list_topics()
        return known, later, missing
    finally:
        await consumer.stop()
        await admin.close()


def test_partitions_of_a_new_topic_and_of_a_missing_one(broker: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_io, "DISCOVER_TIMEOUT_S", SHORT_DISCOVERY_S)
    known, later, missing = asyncio.run(_discover(Settings.of(broker=broker.url)))
    assert known == [TopicPartition("known", 0), TopicPartition("known", 1)]
    assert later == [TopicPartition("later", p) for p in range(3)]  # created after the consumer started
    assert missing == []
