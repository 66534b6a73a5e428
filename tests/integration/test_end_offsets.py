"""The local broker's short end offsets, and :func:`true_end_offsets`, which table recovery relies on."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamrec.io.kafka import client_kwargs, make_consumer, make_producer, true_end_offsets
from streamrec.lab.broker import LocalBroker
from streamrec.settings import Settings

pytestmark = [pytest.mark.integration]

BATCH = 10


async def _ends(settings: Settings) -> tuple[int, int, int]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic("ends", num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = make_producer(settings.kafka, linger_ms=200)  # one record batch of BATCH records
    await producer.start()
    try:
        for _ in range(2):  # two record batches of BATCH records each
            futures = [await producer.send("ends", b"x", partition=0) for _ in range(BATCH)]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    tp = TopicPartition("ends", 0)
    consumer = make_consumer(settings.kafka)
    await consumer.start()
    try:
        reported = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    empty = await true_end_offsets(settings.kafka, {TopicPartition("none", 0): 0})
    return reported, (await true_end_offsets(settings.kafka, {tp: reported}))[tp], len(empty)


def test_true_end_offsets_reads_past_the_short_reported_end(broker: LocalBroker) -> None:
    reported, true_end, n_empty = asyncio.run(_ends(Settings.of(broker=broker.url)))
    assert true_end == 2 * BATCH
    assert BATCH < reported <= true_end  # the local broker says BATCH + 1: the start of the last batch + 1
    assert n_empty == 1  # an empty partition (reported 0) is left as it is
