"""What the dashboard reads from topics: dead letters, new item embeddings and model snapshots.

:class:`TopicFollower` reads its topics from the beginning with a plain consumer (no group: the dashboard never
takes anything from the workers) and hands every record to a log: :class:`DeadLetterLog` (counts per reason
and the last messages), :class:`CatalogueLog` (titles, newest items, encoder rate) and :class:`WeightHistory`
(the ranker's weights over time, and which workers publish snapshots). Every log is bounded.

>>> log = DeadLetterLog()
>>> log.add(b'{"source_topic": "events", "reason": "bad json", "value_b64": "e3g=", "ts": 5.0}', 5000)
>>> log.total, log.by_reason["bad json"], log.recent[0]["value"]
(1, 1, '{x')
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from streamrec.dashboard.readings import SNAPSHOT_PREFIX
from streamrec.io.kafka import make_consumer
from streamrec.settings import KafkaSettings

log = logging.getLogger("streamrec.dashboard")

RECENT_DEAD_LETTERS = 20
MAX_REASONS = 50
"""Distinct dead-letter reasons counted one by one; any further reason counts under :data:`OTHER_REASONS`."""
OTHER_REASONS = "(other reasons)"
SHOWN_VALUE_CHARS = 400
"""A dead letter's original bytes are shown up to this many characters."""
NEWEST_ITEMS = 20
MAX_TITLES = 200_000
"""Items whose title and category are kept to label recommendations (the oldest are dropped first)."""
RATE_BIN_S = 10.0
RATE_BINS = 180
"""Encoder and dead-letter rates: 10 s bins over the last half hour."""
WEIGHT_POINTS = 900
POLL_MS = 200
RESCAN_S = 10.0
"""How often the follower looks for topics or partitions that appeared since it started."""
RETRY_S = 3.0
RETRY_MAX_S = 30.0
"""Wait before reconnecting after a broker error: RETRY_S, doubling while the broker stays away, up to this."""
SIZE_EVERY_S = 2.0
"""How often topic end offsets (the topic table, events published per second) are read."""


def _record_time(timestamp_ms: int | None) -> float:
    return timestamp_ms / 1000.0 if timestamp_ms is not None and timestamp_ms > 0 else time.time()


class BinnedRate:
    """Records per second in fixed bins of record time (the broker's timestamp), the last ``bins`` kept.

    >>> r = BinnedRate(bin_s=10.0, bins=3)
    >>> for t in (1.0, 2.0, 15.0, 41.0):
    ...     r.add(t)
    >>> r.series()
    ([20.0, 30.0, 40.0], [0.0, 0.0, 0.1])
    """

    def __init__(self, bin_s: float = RATE_BIN_S, bins: int = RATE_BINS) -> None:
        self.bin_s = bin_s
        self.bins = bins
        self.counts: dict[float, int] = {}

    def add(self, t: float, n: int = 1) -> None:
        start = math.floor(t / self.bin_s) * self.bin_s
        self.counts[start] = self.counts.get(start, 0) + n
        if len(self.counts) > self.bins:
            for old in sorted(self.counts)[: len(self.counts) - self.bins]:
                del self.counts[old]

    def series(self, now: float | None = None) -> tuple[list[float], list[float]]:
        """Bin starts and records/s, every bin from the oldest kept to ``now``'s (empty bins are 0)."""
        if not self.counts:
            return [], []
        last = max(self.counts)
        if now is not None:
            last = max(last, math.floor(now / self.bin_s) * self.bin_s)
        first = max(min(self.counts), last - (self.bins - 1) * self.bin_s)
        xs = [first + i * self.bin_s for i in range(round((last - first) / self.bin_s) + 1)]
        return xs, [self.counts.get(x, 0) / self.bin_s for x in xs]


class DeadLetterLog:
    """Dead letters per reason and per source topic, and the last :data:`RECENT_DEAD_LETTERS` in full."""

    def __init__(self) -> None:
        self.total = 0
        self.by_reason: Counter[str] = Counter()
        self.by_topic: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_DEAD_LETTERS)
        self.rate = BinnedRate()

    def add(self, value: bytes | None, timestamp_ms: int | None = None) -> None:
        self.total += 1
        self.rate.add(_record_time(timestamp_ms))
        try:
            record = orjson.loads(value or b"")
            if not isinstance(record, dict):
                raise TypeError(type(record).__name__)
        except (orjson.JSONDecodeError, TypeError):
            record = {"reason": "(unreadable dead-letter record)", "source_topic": "?"}
        reason = str(record.get("reason", "?"))
        if reason not in self.by_reason and len(self.by_reason) >= MAX_REASONS:
            reason = OTHER_REASONS
        self.by_reason[reason] += 1
        topic = str(record.get("source_topic", "?"))
        self.by_topic[topic] += 1
        self.recent.append(
            {
                "ts": record.get("ts") if isinstance(record.get("ts"), int | float) else _record_time(timestamp_ms),
                "source_topic": topic,
                "partition": record.get("partition"),
                "offset": record.get("offset"),
                "key": _shown(record.get("key_b64")),
                "value": _shown(record.get("value_b64")),
                "reason": str(record.get("reason", "?")),
            }
        )

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        t, per_s = self.rate.series(now)
        return {
            "total": self.total,
            "by_reason": [{"reason": r, "count": c} for r, c in self.by_reason.most_common()],
            "by_topic": [{"topic": r, "count": c} for r, c in self.by_topic.most_common()],
            "recent": list(reversed(self.recent)),
            "rate": {"t": t, "per_s": per_s},
        }


def _shown(b64: Any) -> str | None:
    """Base64 bytes as text for people: UTF-8 with replacements, cut to :data:`SHOWN_VALUE_CHARS`."""
    if not isinstance(b64, str):
        return None
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return "(not base64)"
    text = raw.decode("utf-8", errors="replace")
    return text if len(text) <= SHOWN_VALUE_CHARS else text[:SHOWN_VALUE_CHARS] + "…"


class CatalogueLog:
    """Item embeddings as they arrive: title and category per item (bounded), the newest items, encoder rate."""

    def __init__(self) -> None:
        self.records = 0
        self.items: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.newest: deque[dict[str, Any]] = deque(maxlen=NEWEST_ITEMS)
        self.rate = BinnedRate()

    def add(self, value: bytes | None, timestamp_ms: int | None = None) -> None:
        if value is None:
            return
        try:
            record = orjson.loads(value)
            item_id = str(record["item_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # the workers dead-letter broken embeddings; nothing to show here
        self.records += 1
        arrived = _record_time(timestamp_ms)
        self.rate.add(arrived)
        title = str(record.get("title") or "")
        category = record.get("category")
        self.items[item_id] = (title, None if category is None else str(category))
        self.items.move_to_end(item_id)
        if len(self.items) > MAX_TITLES:
            self.items.popitem(last=False)
        self.newest.append(
            {
                "item_id": item_id,
                "title": title,
                "category": category,
                "ts": record.get("ts"),
                "embedded_at": arrived,
                "source": record.get("source"),
            }
        )

    def describe(self, item_id: str) -> dict[str, Any]:
        title, category = self.items.get(item_id, ("", None))
        return {"title": title, "category": category}

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        t, per_s = self.rate.series(now)
        return {
            "embeddings_read": self.records,
            "items_known": len(self.items),
            "newest": list(reversed(self.newest)),
            "encoder_rate": {"t": t, "per_s": per_s},
        }


class WeightHistory:
    """The ranker's weights over time: from ``model-snapshots`` (each worker's view of the one shared model),
    or from workers' ``/stats["ranker_weights"]`` once any worker exposes it (then snapshots are only used to
    find workers). Also remembers which worker ids publish snapshots (discovery)."""

    def __init__(self, points: int = WEIGHT_POINTS) -> None:
        self.features: list[str] = []
        self.points: deque[tuple[float, list[float]]] = deque(maxlen=points)
        self.source: str | None = None
        self.snapshot_keys: set[bytes] = set()

    def add(self, t: float, weights: dict[str, float], source: str) -> None:
        if source == "snapshots" and self.source == "stats":
            return
        if source != self.source:
            self.points.clear()
            self.features = []
            self.source = source
        if list(weights) != self.features:
            self.points.clear()
            self.features = list(weights)
        if self.points and t < self.points[-1][0]:
            return  # an older view than the newest plotted (peers publish out of step)
        self.points.append((t, [weights[f] for f in self.features]))

    def add_snapshot(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        if key is None:
            return
        if value is None:
            self.snapshot_keys.discard(key)
            return
        if key.startswith(SNAPSHOT_PREFIX):
            self.snapshot_keys.add(key)
        try:
            snap = orjson.loads(value)
            weights = dict(zip(snap["features"], (float(w) for w in snap["params"]["weight"]), strict=True))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        t = snap.get("ts")
        self.add(float(t) if isinstance(t, int | float) else _record_time(timestamp_ms), weights, "snapshots")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "features": self.features,
            "t": [t for t, _ in self.points],
            "values": {f: [w[i] for _, w in self.points] for i, f in enumerate(self.features)},
        }


class TopicFollower:
    """Follows topics from their beginning and hands each record to its handler; reconnects after broker errors
    and resumes where it was. Also reads the end offsets of ``sized`` topics every :data:`SIZE_EVERY_S`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        handlers: dict[str, Callable[[ConsumerRecord], None]],
        sized: Iterable[str] = (),
    ) -> None:
        self.kafka = kafka
        self.handlers = {kafka.topic(name): handler for name, handler in handlers.items()}
        self.sized = [kafka.topic(name) for name in sized]
        self.positions: dict[TopicPartition, int] = {}
        self.partitions: dict[str, list[int]] = {}
        """Partitions of every followed or sized topic, by full topic name, as the broker last reported them."""
        self.end_offsets: dict[str, int] = {}
        """Sum of the end offsets of each sized topic's partitions (its messages, on a topic that never deletes)."""
        self.sized_at: float | None = None
        self.error: str | None = None

    async def run(self) -> None:
        wait = RETRY_S
        while True:
            consumer = make_consumer(self.kafka, fetch_max_wait_ms=self.kafka.follow_fetch_wait_ms)
            try:
                await consumer.start()
                wait = RETRY_S
                await self._follow(consumer)
            except (KafkaError, OSError) as exc:
                text = str(exc)
                self.error = text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"
                log.warning("topic follower: %s; retrying in %.0fs", self.error, wait)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_S)

    async def _scan(self, consumer: Any) -> bool:
        """Refresh partition lists; True when the followed partitions changed."""
        await consumer._client.force_metadata_update()
        changed = False
        for topic in {*self.handlers, *self.sized}:
            parts = sorted(consumer.partitions_for_topic(topic) or ())
            if parts != self.partitions.get(topic, []):
                self.partitions[topic] = parts
                changed = changed or topic in self.handlers
        return changed

    async def _follow(self, consumer: Any) -> None:
        loop = asyncio.get_running_loop()
        next_scan = next_size = 0.0
        tps: list[TopicPartition] = []
        while True:
            now = loop.time()
            if now >= next_scan:
                next_scan = now + RESCAN_S
                if await self._scan(consumer) or not tps:
                    tps = [TopicPartition(t, p) for t in self.handlers for p in self.partitions.get(t, [])]
                    if tps:
                        consumer.assign(tps)
                        for tp in tps:
                            if tp in self.positions:
                                consumer.seek(tp, self.positions[tp])
                            else:
                                await consumer.seek_to_beginning(tp)
            if now >= next_size:
                next_size = now + SIZE_EVERY_S
                await self._sizes(consumer)
            if not tps:
                await asyncio.sleep(POLL_MS / 1000.0)
                continue
            batch = await consumer.getmany(timeout_ms=POLL_MS)
            self.error = None
            for tp, records in batch.items():
                handler = self.handlers[tp.topic]
                for record in records:
                    try:
                        handler(record)
                    except Exception:  # one odd record must not stop the page
                        log.exception("dashboard: could not read a %s record", tp.topic)
                    self.positions[tp] = record.offset + 1

    async def _sizes(self, consumer: Any) -> None:
        tps = [TopicPartition(t, p) for t in self.sized for p in self.partitions.get(t, [])]
        if not tps:
            return
        ends = await consumer.end_offsets(tps)
        sums: dict[str, int] = {}
        for tp, end in ends.items():
            sums[tp.topic] = sums.get(tp.topic, 0) + int(end)
        self.end_offsets = sums
        self.sized_at = time.time()
