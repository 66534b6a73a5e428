""":func:`send_batched` against the local broker: where each message lands, in what order, tombstones included."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from streamrec.io.kafka import OutMessage, client_kwargs, make_producer, read_to_end, send_batched
from streamrec.lab.broker import LocalBroker
from streamrec.settings import Settings

pytestmark = [pytest.mark.integration]

KEYED = "batched-keyed"
PINNED = "batched-pinned"
PROBE = "batched-probe"
USERS = 40
MESSAGES = 400
Landed = dict[tuple[str, int], list[tuple[bytes, bytes | None]]]


def payload(i: int) -> bytes:
    return f"v{i}".encode().ljust(80, b".")


async def _round_trip(settings: Settings) -> tuple[Landed, dict[bytes, int], int]:
    """Send with send_batched, find where producer.send puts each key (on a topic shaped alike), read back."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(KEYED, 4, 1), NewTopic(PINNED, 2, 1), NewTopic(PROBE, 4, 1)])
    finally:
        await admin.close()
    messages: list[OutMessage] = [(KEYED, None, f"user-{i % USERS}".encode(), payload(i)) for i in range(MESSAGES)]
    messages += [(PINNED, 1, b"p", f"p{i}".encode()) for i in range(30)]
    messages.append((KEYED, None, b"user-3", None))
    producer = make_producer(settings.kafka, max_batch_size=1024)  # ~10 messages per builder: several per partition
    await producer.start()
    try:
        futures = await send_batched(producer, messages)
        await asyncio.gather(*futures)
        plain = {}
        for i in range(USERS):
            key = f"user-{i}".encode()
            plain[key] = (await (await producer.send(PROBE, b"x", key=key))).partition
    finally:
        await producer.stop()
    landed: Landed = defaultdict(list)

    def keep(record: ConsumerRecord) -> None:
        landed[(record.topic, record.partition)].append((record.key, record.value))

    await read_to_end(settings.kafka, KEYED, keep)
    await read_to_end(settings.kafka, PINNED, keep)
    return landed, plain, len(futures)


def test_send_batched_keeps_partitioning_and_order(broker: LocalBroker) -> None:
    landed, plain, n_batches = asyncio.run(_round_trip(Settings.of(broker=broker.url)))
    assert sum(len(v) for (topic, _), v in landed.items() if topic == KEYED) == MESSAGES + 1
    for (topic, partition), records in landed.items():
        if topic != KEYED:
            continue
        per_key: dict[bytes, list[bytes | None]] = defaultdict(list)
        for key, value in records:
            assert plain[key] == partition  # where producer.send puts the key: a user's messages never split
            per_key[key].append(value)
        for key, values in per_key.items():
            i = int(key.decode().split("-")[1])
            expected: list[bytes | None] = [payload(n) for n in range(i, MESSAGES, USERS)]
            assert values == ([*expected, None] if i == 3 else expected)  # in order, the tombstone last
    assert [v for _, v in landed[(PINNED, 1)]] == [f"p{i}".encode() for i in range(30)]
    assert landed[(PINNED, 0)] == []
    assert n_batches > 20  # 1 KiB builders: each partition's messages went out in several record batches
