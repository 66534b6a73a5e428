"""Offsets Faust's consumer skipped after a rebalance, read back and put into the batch (:class:`GapFiller`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streamrec.io.kafka import make_consumer
from streamrec.settings import KafkaSettings
from streamrec.worker import faust_compat
from streamrec.worker.stats import WorkerStats

log = logging.getLogger(__name__)

GAP_POLL_MS = 100


@dataclass(eq=False)
class RefetchedEvent:
    """An ``events`` record read directly to fill a gap, with the two attributes the worker (and the changelog
    partition of its user's profile) read from a Faust event: ``message`` and ``value``."""

    message: ConsumerRecord
    value: bytes


class GapFiller:
    """Checks that each partition's deliveries follow on without a hole, and fills any hole from the broker.

    Within one group generation each partition's offsets must follow on from the committed offset and
    then from the previous batch (a redelivery may go back; nothing may be jumped over). In the chaos runs,
    right after a rebalance, Faust's fetch loop sometimes dropped the records of one fetch and then counted
    the hole as a compacted-away gap, which it committed over — 16 events per partition that were never
    applied. Each hole is read here with a plain consumer and its events are inserted, in order, before the
    first event after it. Faust's gap bookkeeping lets the commit pass the hole only once a later offset is
    acknowledged, i.e. after the batch applied the hole's events.
    """

    def __init__(self, app: faust.App, kafka: KafkaSettings, stats: WorkerStats) -> None:
        self.app = app
        self.kafka = kafka
        self.stats = stats
        self._generation: int | None = None
        self._expected: dict[int, int] = {}
        """Per partition, the offset after the last one delivered in this group generation."""
        self._consumer: Any = None

    async def fill(self, batch: Sequence[Any]) -> list[Any]:
        """The batch with any offsets Faust skipped put back in, fetched directly from the broker."""
        generation = self.app.consumer_generation_id
        if generation != self._generation:
            self._generation = generation
            self._expected.clear()
        out: list[Any] = []
        for fevent in batch:
            msg = fevent.message
            expected = self._expected.get(msg.partition)
            if expected is None:  # first delivery in this generation: it must be the committed offset
                expected = self._committed(msg)
            if expected is not None and msg.offset > expected:
                missing = await self._fetch_range(msg.topic, msg.partition, expected, msg.offset)
                self.stats.offset_gaps_filled += len(missing)
                log.warning(
                    "partition %d: offsets %d..%d were skipped by the consumer; fetched %d and applying them",
                    msg.partition,
                    expected,
                    msg.offset - 1,
                    len(missing),
                )
                out.extend(missing)
            out.append(fevent)
            self._expected[msg.partition] = max(expected or 0, msg.offset + 1)
        return out

    def _committed(self, msg: Any) -> int | None:
        """Faust's committed offset for the message's partition (where delivery resumes), if it knows one."""
        tp = getattr(msg, "tp", None)
        return faust_compat.committed_offset(self.app, tp) if tp is not None else None

    async def _fetch_range(self, topic: str, partition: int, start: int, stop: int) -> list[RefetchedEvent]:
        """Records ``start`` ≤ offset < ``stop`` of one partition, read directly (no group, no commit)."""
        if self._consumer is None:
            self._consumer = make_consumer(self.kafka)
            await self._consumer.start()
        consumer = self._consumer
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[RefetchedEvent] = []
        deadline = time.monotonic() + self.kafka.session_timeout_s
        while (not out or out[-1].message.offset < stop - 1) and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=GAP_POLL_MS)
            out += [RefetchedEvent(r, r.value) for r in batch.get(tp, []) if start <= r.offset < stop]
        if out and out[-1].message.offset < stop - 1:
            log.error("partition %d: could not fetch offsets %d..%d", partition, out[-1].message.offset + 1, stop - 1)
        return out
