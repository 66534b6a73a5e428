"""Reading event logs into streamrec records, in timestamp order, and publishing them to Kafka.

Readers yield :class:`Record` s for the ``items`` and ``events`` topics, sorted by time (ties keep file
order), with each item upsert placed before the first event that refers to the item. A row that cannot be
read is never published half-valid: it is counted in :class:`ReplayStats` with its line and reason.

* ``taobao`` — ``user,item,category,behavior,ts``: pv → view, fav and cart → add_to_cart, buy → purchase;
  every item is upserted first (with its category id and no text), at the log's start time.
* ``movielens`` — ML-100K ``u.data`` + ``u.item``: rating ≥ 4 → purchase, else view; title and genres
  become the item's text.
* ``csv`` — any log, through a :class:`CsvMapping` of columns and event names.
* ``jsonl`` — one event or item object per line (an object with ``type`` is an event, else an item), or
  ``{"topic": "events"|"items", "value": {...}}``.
"""

from __future__ import annotations

import asyncio
import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from streamrec.model.events import InvalidMessage, dumps, event_from_dict, item_from_dict
from streamrec.settings import KafkaSettings

Format = Literal["taobao", "movielens", "csv", "jsonl"]
TimestampFormat = Literal["unix", "unix_ms", "iso"]
TAOBAO_TYPES: dict[str, str] = {"pv": "view", "fav": "add_to_cart", "cart": "add_to_cart", "buy": "purchase"}
MOVIELENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
MOVIELENS_POSITIVE_RATING = 4
MAX_REASONS = 20
SEND_CHUNK = 5_000
"""Delivery futures are awaited in chunks: enough in flight for throughput, bounded memory."""
MS_PER_S = 1000.0


@dataclass(frozen=True, slots=True)
class Record:
    """One message to publish: logical topic (``events``/``items``), key, validated value, event time."""

    topic: str
    key: str
    value: dict[str, Any]
    ts: float


@dataclass
class ReplayStats:
    """What a reader saw: rows read, records produced, rows skipped and why (first few)."""

    rows: int = 0
    events: int = 0
    items: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{where}: {reason}")


def _event(value: dict[str, Any], stats: ReplayStats) -> Record:
    event = event_from_dict(value)
    stats.events += 1
    return Record("events", event.user_id, event.to_dict(), event.ts)


def _item(value: dict[str, Any], stats: ReplayStats) -> Record:
    item = item_from_dict(value)
    stats.items += 1
    return Record("items", item.item_id, item.to_dict(), item.ts)


def _in_time_order(records: list[Record]) -> list[Record]:
    """Stable sort by ts; an item upsert keeps its place before same-time events that follow it in the file."""
    return sorted(records, key=lambda r: r.ts)


def read_taobao(path: Path | str, limit: int | None = None, stats: ReplayStats | None = None) -> Iterator[Record]:
    """Taobao UserBehavior CSV (no header): the catalogue (ids + categories) first, then events by time."""
    stats = stats if stats is not None else ReplayStats()
    rows: list[tuple[float, int, list[str]]] = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if limit is not None and lineno > limit:
                break
            stats.rows += 1
            if len(row) != 5 or row[3] not in TAOBAO_TYPES:
                stats.skip(f"line {lineno}", f"expected user,item,category,pv|fav|cart|buy,ts: {row!r}")
                continue
            try:
                ts = float(row[4])
            except ValueError:
                stats.skip(f"line {lineno}", f"bad timestamp {row[4]!r}")
                continue
            rows.append((ts, lineno, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    # The log has no catalogue: publish every item once, up front, stamped with the log's start. Stamping an
    # item with its first event's time would tell a recommender which item is about to be taken (it would be
    # the "newest" one) — a leak from the future that no live catalogue has.
    start = rows[0][0] if rows else 0.0
    known: set[str] = set()
    for _, _, (_, item, category, _, _) in rows:
        if item not in known:
            known.add(item)
            yield _item({"item_id": item, "title": "", "category": category, "ts": start}, stats)
    for ts, lineno, (user, item, _, behaviour, _) in rows:
        try:
            yield _event({"user_id": user, "item_id": item, "type": TAOBAO_TYPES[behaviour], "ts": ts}, stats)
        except InvalidMessage as exc:
            stats.skip(f"line {lineno}", str(exc))


def _movielens_dir(path: Path | str) -> Path:
    p = Path(path)
    return p.parent if p.is_file() else p


def read_movielens(
    path: Path | str,
    limit: int | None = None,
    positive_rating: int = MOVIELENS_POSITIVE_RATING,
    stats: ReplayStats | None = None,
) -> Iterator[Record]:
    """ML-100K: the whole catalogue first (at the first rating's time), then ratings as events by time."""
    stats = stats if stats is not None else ReplayStats()
    folder = _movielens_dir(path)
    ratings: list[tuple[float, int, str, str, int]] = []
    with open(folder / "u.data") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and lineno > limit:
                break
            stats.rows += 1
            parts = line.split("\t")
            try:
                user, item, rating, ts = parts[0], parts[1], int(parts[2]), float(parts[3])
            except (IndexError, ValueError):
                stats.skip(f"u.data line {lineno}", f"expected user<TAB>item<TAB>rating<TAB>ts: {line.strip()!r}")
                continue
            ratings.append((ts, lineno, user, item, rating))
    ratings.sort(key=lambda r: (r[0], r[1]))
    start = ratings[0][0] if ratings else 0.0
    with open(folder / "u.item", encoding="latin-1") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 + len(MOVIELENS_GENRES):
                stats.skip(f"u.item line {lineno}", "too few fields")
                continue
            flags = parts[-len(MOVIELENS_GENRES) :]
            genres = [g for g, flag in zip(MOVIELENS_GENRES, flags, strict=True) if flag == "1"]
            released = parts[2].rsplit("-", 1)[-1] if parts[2] else ""
            description = f"Genres: {', '.join(genres)}." + (f" Released {released}." if released else "")
            value = {"item_id": parts[0], "title": parts[1], "description": description, "ts": start}
            if genres:
                value["category"] = genres[0]
            yield _item(value, stats)
    for ts, _, user, item, rating in ratings:
        etype = "purchase" if rating >= positive_rating else "view"
        yield _event({"user_id": user, "item_id": item, "type": etype, "ts": ts}, stats)


@dataclass(frozen=True)
class CsvMapping:
    """How a CSV log maps onto streamrec: column names (or 0-based indexes without a header) and event names."""

    user: str
    item: str
    type: str
    timestamp: str
    type_map: dict[str, str]
    title: str | None = None
    description: str | None = None
    category: str | None = None
    brand: str | None = None
    price: str | None = None
    timestamp_format: TimestampFormat = "unix"
    delimiter: str = ","
    has_header: bool = True

    ITEM_FIELDS = ("title", "description", "category", "brand", "price")

    @classmethod
    def from_options(
        cls,
        columns: str,
        type_map: str,
        timestamp_format: TimestampFormat = "unix",
        delimiter: str = ",",
        has_header: bool = True,
    ) -> CsvMapping:
        """From CLI strings: ``user=uid,item=sku,type=action,ts=time[,title=…]`` and ``pageview=view,…``."""
        cols = _pairs(columns, "--columns")
        if "ts" in cols:
            cols["timestamp"] = cols.pop("ts")
        missing = {"user", "item", "type", "timestamp"} - cols.keys()
        if missing:
            raise ValueError(
                f"--columns needs {', '.join(sorted(missing))} (e.g. user=uid,item=sku,type=action,ts=time)"
            )
        unknown = cols.keys() - {"user", "item", "type", "timestamp", *cls.ITEM_FIELDS}
        if unknown:
            raise ValueError(f"--columns: unknown field(s) {', '.join(sorted(unknown))}")
        types = _pairs(type_map, "--types")
        bad = {v for v in types.values() if v not in ("view", "click", "add_to_cart", "purchase", "search")}
        if bad:
            raise ValueError(f"--types maps onto unknown event type(s) {', '.join(sorted(bad))}")
        return cls(
            type_map=types, timestamp_format=timestamp_format, delimiter=delimiter, has_header=has_header, **cols
        )


def _pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what}: expected name=value pairs separated by commas, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _parse_ts(raw: str, fmt: TimestampFormat) -> float:
    if fmt == "iso":
        return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).timestamp()
    value = float(raw)
    return value / MS_PER_S if fmt == "unix_ms" else value


def read_csv(
    path: Path | str, mapping: CsvMapping, limit: int | None = None, stats: ReplayStats | None = None
) -> Iterator[Record]:
    """A generic log; item attribute columns become an upsert whenever an item's attributes first appear or change."""
    stats = stats if stats is not None else ReplayStats()
    out: list[Record] = []
    attrs_seen: dict[str, tuple[Any, ...]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter=mapping.delimiter)
        header: list[str] | None = next(reader, None) if mapping.has_header else None

        def col(name: str) -> int:
            if header is None:
                return int(name)
            if name not in header:
                raise ValueError(f"column {name!r} is not in the header {header}")
            return header.index(name)

        idx = {f: col(getattr(mapping, f)) for f in ("user", "item", "type", "timestamp")}
        item_idx = {f: col(getattr(mapping, f)) for f in CsvMapping.ITEM_FIELDS if getattr(mapping, f)}
        for lineno, row in enumerate(reader, start=2 if header is not None else 1):
            if limit is not None and stats.rows >= limit:
                break
            stats.rows += 1
            where = f"line {lineno}"
            try:
                raw_type = row[idx["type"]]
                etype = mapping.type_map.get(raw_type)
                if etype is None:
                    stats.skip(where, f"event type {raw_type!r} is not in --types")
                    continue
                ts = _parse_ts(row[idx["timestamp"]], mapping.timestamp_format)
                item_id = row[idx["item"]]
                if item_idx:
                    attrs = tuple(row[i] for i in item_idx.values())
                    if attrs_seen.get(item_id) != attrs:
                        value: dict[str, Any] = {"item_id": item_id, "title": "", "ts": ts}
                        for name, raw in zip(item_idx, attrs, strict=True):
                            if raw != "":
                                value[name] = float(raw) if name == "price" else raw
                        out.append(_item(value, stats))
                        attrs_seen[item_id] = attrs
                event = {"user_id": row[idx["user"]], "type": etype, "ts": ts}
                if etype == "search":
                    event["query"] = item_id
                else:
                    event["item_id"] = item_id
                out.append(_event(event, stats))
            except (IndexError, ValueError, InvalidMessage) as exc:
                stats.skip(where, str(exc))
    yield from _in_time_order(out)


def read_jsonl(path: Path | str, limit: int | None = None, stats: ReplayStats | None = None) -> Iterator[Record]:
    """One JSON object per line: an event (has ``type``), an item, or ``{"topic", "value"}``."""
    stats = stats if stats is not None else ReplayStats()
    out: list[Record] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and stats.rows >= limit:
                break
            if not line.strip():
                continue
            stats.rows += 1
            try:
                obj = orjson.loads(line)
                if not isinstance(obj, dict):
                    raise InvalidMessage("expected a JSON object")
                topic = obj.get("topic")
                if topic is not None:
                    if topic not in ("events", "items") or not isinstance(obj.get("value"), dict):
                        raise InvalidMessage('a wrapper needs "topic": "events"|"items" and an object "value"')
                    obj = obj["value"]
                else:
                    topic = "events" if "type" in obj else "items"
                out.append(_event(obj, stats) if topic == "events" else _item(obj, stats))
            except (orjson.JSONDecodeError, InvalidMessage) as exc:
                stats.skip(f"line {lineno}", str(exc))
    yield from _in_time_order(out)


def read_log(
    path: Path | str,
    fmt: Format | str,
    mapping: CsvMapping | None = None,
    limit: int | None = None,
    stats: ReplayStats | None = None,
) -> Iterator[Record]:
    """Dispatch on the log format."""
    if fmt == "taobao":
        return read_taobao(path, limit, stats)
    if fmt == "movielens":
        return read_movielens(path, limit, stats=stats)
    if fmt == "jsonl":
        return read_jsonl(path, limit, stats)
    if fmt == "csv":
        if mapping is None:
            raise ValueError("the csv format needs a CsvMapping (--columns and --types)")
        return read_csv(path, mapping, limit, stats)
    raise ValueError(f"unknown log format {fmt!r}")


async def publish(
    records: Iterable[Record],
    kafka: KafkaSettings,
    speed: float | None = None,
    progress: bool = True,
    total: int | None = None,
) -> int:
    """Send records to their topics (keyed), as fast as possible or paced at ``speed``× event time.

    Returns the number of records the broker acknowledged; any failed delivery raises.
    """
    from tqdm import tqdm

    from streamrec.io.kafka import make_producer

    producer = make_producer(kafka)
    await producer.start()
    sent = 0
    pending: list[asyncio.Future[Any]] = []
    bar = tqdm(total=total, unit="msg", desc="replay", disable=not progress, mininterval=0.5)
    loop = asyncio.get_running_loop()
    t0_wall = loop.time()
    t0_event: float | None = None
    try:
        for record in records:
            if speed is not None and speed > 0 and math.isfinite(record.ts):
                t0_event = record.ts if t0_event is None else t0_event
                delay = (record.ts - t0_event) / speed - (loop.time() - t0_wall)
                if delay > 0:
                    await asyncio.sleep(delay)
            fut = await producer.send(kafka.topic(record.topic), dumps(record.value), key=record.key.encode())
            pending.append(fut)
            if len(pending) >= SEND_CHUNK:
                await asyncio.gather(*pending)
                sent += len(pending)
                bar.update(len(pending))
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
        sent += len(pending)
        bar.update(len(pending))
    finally:
        bar.close()
        await producer.stop()
    return sent
