"""aiokafka clients built from the kafka settings, and small helpers every worker shares.

All clients get the same connection and security options (:func:`client_kwargs`: SASL/SSL pass through). Producers
are at-least-once (``acks=all``, no idempotence: the local broker rejects InitProducerId); consumers never
trust ``end_offsets`` alone, because the local broker reports them short — they read until the topic is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from streamrec.model.events import dead_letter, dumps
from streamrec.settings import KafkaSettings

LINGER_MS = 5
IDLE_POLL_MS = 300
"""A compacted topic counts as fully read after one empty poll this long past its reported end."""
DISCOVER_TIMEOUT_S = 10.0
DISCOVER_POLL_S = 0.1


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by every Kafka client streamrec creates."""
    kwargs: dict[str, Any] = {"bootstrap_servers": kafka.broker, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile or None, certfile=kafka.ssl_certfile or None, keyfile=kafka.ssl_keyfile or None
        )
    return kwargs


def make_producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    kwargs: dict[str, Any] = {
        **client_kwargs(kafka),
        "acks": "all",
        "linger_ms": LINGER_MS,
        "enable_idempotence": False,
        "max_request_size": max(kafka.max_message_bytes * 4, 1 << 20),
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(kafka: KafkaSettings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    kwargs: dict[str, Any] = {
        **client_kwargs(kafka),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
        "session_timeout_ms": int(kafka.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(kafka.heartbeat_interval_s * 1000),
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


_PARTITIONER = DefaultPartitioner()


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """Where ``producer.send`` puts a message with ``key`` among ``partitions`` (sorted): aiokafka's default
    partitioner, murmur2 of the key like the Java client's and kafkajs's default. Not every client's default:
    librdkafka (confluent-kafka, kcat, Go/.NET/Node wrappers) hashes with CRC32, sarama with FNV-1a, kafka-go
    round-robins (README, "Publishing from other clients"). streamrec's own writers and readers of a user's
    key use this; the worker counts events that are not where it puts them (``misrouted_events``)."""
    return int(_PARTITIONER(key, partitions, partitions))


OutMessage = tuple[str, int | None, bytes, bytes | None]
"""(topic, partition or None for the key's default partition, key, value or None for a tombstone)."""


async def send_batched(producer: AIOKafkaProducer, messages: Sequence[OutMessage]) -> list[asyncio.Future[Any]]:
    """Send ``messages`` as one record batch per (topic, partition); returns the batches' delivery futures.

    ``producer.send`` costs a future, a metadata lookup and an accumulator append per message; a worker batch
    publishes thousands (a list and a profile per user), so they are appended to one builder per partition
    and each builder is handed to the producer once. Messages keep their order within a partition. A message
    without a partition goes where ``send`` would put it: aiokafka's default partitioner (murmur2 of the key).
    """
    known: dict[str, list[int]] = {}
    builders: dict[tuple[str, int], list[Any]] = {}
    for topic, partition, key, value in messages:
        if partition is None:
            if topic not in known:
                known[topic] = sorted(await producer.partitions_for(topic))
            partition = key_partition(key, known[topic])
        chain = builders.get((topic, partition))
        if chain is None:
            chain = builders[(topic, partition)] = [producer.create_batch()]
        if chain[-1].append(key=key, value=value, timestamp=None) is None:  # full; an empty one takes any message
            chain.append(producer.create_batch())
            chain[-1].append(key=key, value=value, timestamp=None)
    futures = []
    for (topic, partition), chain in builders.items():
        for builder in chain:
            futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures


async def partitions_of(kafka: KafkaSettings, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """All partitions of ``topic`` (waits for metadata; empty list if the topic does not exist).

    The consumer's metadata (loaded when it started) answers at once; a topic it has not seen yet is looked up
    with an admin client's metadata for *all* topics, retried until :data:`DISCOVER_TIMEOUT_S`. Never a request
    that names the topic: a broker that auto-creates topics (the local one does) would create it.
    """
    parts = consumer.partitions_for_topic(topic)
    if parts:
        return [TopicPartition(topic, p) for p in sorted(parts)]
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = asyncio.get_running_loop().time() + DISCOVER_TIMEOUT_S
    admin = AIOKafkaAdminClient(**client_kwargs(kafka))
    await admin.start()
    try:
        while True:
            described = {t["topic"]: t for t in await admin.describe_topics()}  # no names: every topic
            found = described.get(topic)
            if found is not None and found["partitions"]:
                return [TopicPartition(topic, p) for p in sorted(int(d["partition"]) for d in found["partitions"])]
            if asyncio.get_running_loop().time() > deadline:
                return []
            await asyncio.sleep(DISCOVER_POLL_S)
    finally:
        await admin.close()


async def true_end_offsets(kafka: KafkaSettings, reported: Mapping[Any, int]) -> dict[Any, int]:
    """End offsets as they really are, from end offsets as a broker reported them (same keys back).

    The local broker reports the first offset of a partition's last record batch + 1, so a reader that stops
    there misses the rest of that batch (Faust's table recovery lost the last changelog updates this way).
    The true end is found by fetching from ``reported − 1``: whatever comes back is the last batch (and any
    record appended since), so its last offset + 1 is the end. On Apache Kafka the fetch returns nothing
    and the reported ends stand. Keys may be any ``(topic, partition)`` named tuples (Faust's ``TP`` too).
    """
    ends = dict(reported)
    todo = {TopicPartition(tp.topic, tp.partition): tp for tp, end in reported.items() if end}
    if not todo:
        return ends
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, key in todo.items():
            consumer.seek(tp, reported[key] - 1)
        waiting = set(todo)
        while waiting:
            batch = await consumer.getmany(*waiting, timeout_ms=IDLE_POLL_MS)
            if not batch:
                break  # nothing at reported − 1 onwards: the reported end is the true one
            for tp, records in batch.items():
                if records:
                    key = todo[tp]
                    ends[key] = max(ends[key], records[-1].offset + 1)
                    waiting.discard(tp)
        return ends
    finally:
        await consumer.stop()


async def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    on_record: Callable[[ConsumerRecord], None] | None = None,
    consumer: AIOKafkaConsumer | None = None,
    partitions: list[TopicPartition] | None = None,
    on_records: Callable[[list[ConsumerRecord]], Awaitable[None]] | None = None,
) -> int:
    """Read ``partitions`` (default: all) of ``topic`` from the beginning until idle; returns records read.

    Each record goes to ``on_record``, or each fetched run of records to the coroutine ``on_records``.

    Stops only when each partition's position has passed its reported end offset *and* a poll comes
    back empty — the local broker under-reports end offsets, so the second condition is what counts.
    """
    own = consumer is None
    consumer = consumer or make_consumer(kafka)
    if own:
        await consumer.start()
    try:
        tps = partitions or await partitions_of(kafka, consumer, topic)
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        count = 0
        while True:
            batch = await consumer.getmany(timeout_ms=IDLE_POLL_MS)
            fetched = [record for records in batch.values() for record in records]
            count += len(fetched)
            if on_record is not None:
                for record in fetched:
                    on_record(record)
            if on_records is not None and fetched:
                await on_records(fetched)
            if not batch and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                return count
    finally:
        if own:
            await consumer.stop()


class DeadLetters:
    """Sends rejected messages to ``dead-letters`` with their original bytes and the reason; counts them."""

    def __init__(self, kafka: KafkaSettings, send: Callable[[str, bytes, bytes], Any]) -> None:
        self.topic = kafka.topic("dead-letters")
        self._send = send
        self.count = 0

    async def reject(
        self,
        source_topic: str,
        value: bytes | None,
        reason: str,
        key: bytes | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.count += 1
        record = dead_letter(source_topic, value, reason, key, partition, offset)
        await self._send(self.topic, source_topic.encode(), dumps(record))
