"""Following a whole topic outside any consumer group: what the catalogue, item-update and model followers share."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka.structs import ConsumerRecord

from streamrec.io.kafka import make_consumer, partitions_of, read_to_end
from streamrec.settings import KafkaSettings

log = logging.getLogger(__name__)

FOLLOW_POLL_MS = 100
"""How long one poll of a followed topic waits for records (the fetch wait itself is ``follow_fetch_wait_ms``)."""

OnRecords = Callable[[list[ConsumerRecord]], Awaitable[None]]


async def follow(
    kafka: KafkaSettings,
    topic: str,
    on_records: OnRecords,
    *,
    caught_up: Callable[[int], Awaitable[None]] | None = None,
    skip_key: bytes | None = None,
) -> None:
    """Read every partition of ``topic`` from the beginning, then keep reading it until cancelled.

    Every worker reads the whole topic (no consumer group: each needs every record). Each fetched run of
    records goes to ``on_records``, in order. With ``caught_up``, the topic is first read to its true end
    (:func:`~streamrec.io.kafka.read_to_end`) and ``caught_up(records read)`` is awaited before any newer
    record is handed on: what the worker needs before it is ready. Once following, records keyed ``skip_key``
    (this worker's own) are dropped. A topic that does not exist is logged and not followed (``caught_up(0)``
    still runs).
    """
    consumer = make_consumer(kafka, fetch_max_wait_ms=kafka.follow_fetch_wait_ms)
    await consumer.start()
    try:
        tps = await partitions_of(kafka, consumer, topic)
        if not tps:
            log.warning("no %s topic: not following it (run `streamrec topics apply`)", topic)
            if caught_up is not None:
                await caught_up(0)
            return
        if caught_up is not None:
            await caught_up(await read_to_end(kafka, topic, consumer=consumer, partitions=tps, on_records=on_records))
        else:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
            records = [r for part in batch.values() for r in part if skip_key is None or r.key != skip_key]
            if records:
                await on_records(records)
    finally:
        await consumer.stop()
