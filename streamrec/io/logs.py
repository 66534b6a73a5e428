"""Reading event logs into streamrec records, in timestamp order, and publishing them to Kafka.

Readers yield :class:`Record` s for the ``items`` and ``events`` topics, sorted by time (ties keep file
order), with each item upsert placed before the first event that refers to the item. A row that cannot be
read is never published half-valid: it is counted in :class:`ReplayStats` with its line and reason.

* ``taobao`` — ``user,item,category,behavior,ts``: pv → view, fav and cart → add_to_cart, buy → purchase;
  every item is upserted first (with its category id and no text), at the log's start time.
* ``movielens`` — ML-100K ``u.data`` + ``u.item``: rating ≥ 4 → purchase, else view; title and genres
  become the item's text.
* ``csv`` — any log, through a :class:`CsvMapping` of columns and event names (an event name mapped to
  ``drop`` is counted as dropped, not as bad); timestamps in any one format of :class:`TimestampParser`.
* ``jsonl`` — one event or item object per line (an object with ``type`` is an event, else an item), or
  ``{"topic": "events"|"items", "value": {...}}``.
"""

from __future__ import annotations

import asyncio
import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from streamrec.model.events import (
    EVENT_TYPES,
    MAX_EVENT_TS,
    InvalidMessage,
    Item,
    dumps,
    event_from_dict,
    item_from_dict,
)
from streamrec.settings import KafkaSettings

Format = Literal["taobao", "movielens", "csv", "jsonl"]
TimestampFormat = Literal["auto", "unix", "unix_ms", "iso"]
TIMESTAMP_FORMATS: tuple[str, ...] = ("auto", "unix", "unix_ms", "iso")
DROP = "drop"
"""``--types`` target that discards an event name on purpose: such rows are counted as dropped, not bad."""
CSV_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t != "forget_user")
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
REASONS_SHOWN = 5
"""Skip reasons printed by :func:`ingest_report` (the first ones, with their line numbers)."""
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
    """What a reader saw: rows read, records produced, rows skipped (bad) and why, rows dropped (by ``--types``)."""

    rows: int = 0
    events: int = 0
    items: int = 0
    skipped: int = 0
    dropped: int = 0
    reasons: list[str] = field(default_factory=list)
    dropped_types: Counter[str] = field(default_factory=Counter)

    def skip(self, where: str, reason: str) -> None:
        """A bad row: counted, and its reason kept while fewer than :data:`MAX_REASONS` are."""
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{where}: {reason}")

    def drop(self, event_type: str) -> None:
        """A row whose event name ``--types`` maps to ``drop``: left out on purpose, not an error."""
        self.dropped += 1
        self.dropped_types[event_type] += 1

    @property
    def used(self) -> int:
        """Rows that became records (read, neither skipped nor dropped)."""
        return self.rows - self.skipped - self.dropped


def ingest_report(stats: ReplayStats, max_skipped: float, need_events: bool) -> tuple[list[str], str | None]:
    """What ``replay`` and ``eval`` print about a log they read, and why it is unusable (``None`` if it is not).

    A log is unusable when no row could be used (``need_events``: no row gave an event) or when the share of
    bad rows is above ``max_skipped``; dropped rows were asked for and never count against it.
    """
    line = (
        f"{stats.rows:,} rows read, {stats.used:,} used, {stats.skipped:,} skipped (bad), "
        f"{stats.dropped:,} dropped (--types)"
    )
    if stats.dropped_types:
        line += ": " + ", ".join(f"{name} {n:,}" for name, n in stats.dropped_types.most_common())
    lines = [line]
    if stats.reasons:
        lines.append(f"first reasons for skipping ({min(len(stats.reasons), REASONS_SHOWN)} of {stats.skipped:,}):")
        lines.extend(f"  {reason}" for reason in stats.reasons[:REASONS_SHOWN])
    problem: str | None = None
    if stats.used == 0 or (need_events and stats.events == 0):
        problem = "no row of the log could be used" if stats.rows else "the log has no rows"
    elif stats.skipped / stats.rows > max_skipped:
        problem = (
            f"{stats.skipped / stats.rows:.2%} of the rows were skipped as bad, more than --max-skipped "
            f"{max_skipped:.2%}"
        )
    return lines, problem


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
    """ML-100K: the whole catalogue first (at the first rating's time), then ratings as events by time.

    Rows read are ``u.data`` ratings (up to ``limit``) plus every ``u.item`` line.
    """
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
            stats.rows += 1
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
    """How a CSV log maps onto streamrec: column names (or 0-based indexes without a header) and event names.

    ``type_map`` maps the log's event names onto ours, or onto :data:`DROP` to leave them out on purpose.
    """

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
    session: str | None = None
    timestamp_format: TimestampFormat = "auto"
    delimiter: str = ","
    has_header: bool = True

    ITEM_FIELDS = ("title", "description", "category", "brand", "price")
    EVENT_FIELDS = ("user", "item", "type", "timestamp")

    @classmethod
    def from_options(
        cls,
        columns: str,
        type_map: str,
        timestamp_format: TimestampFormat = "auto",
        delimiter: str = ",",
        has_header: bool = True,
    ) -> CsvMapping:
        """From CLI strings: ``user=uid,item=sku,type=action,ts=time[,session=…,title=…]`` and ``pageview=view,…``."""
        cols = _pairs(columns, "--columns")
        if "ts" in cols:
            cols["timestamp"] = cols.pop("ts")
        missing = set(cls.EVENT_FIELDS) - cols.keys()
        if missing:
            raise ValueError(
                f"--columns needs {', '.join(sorted(missing))} (e.g. user=uid,item=sku,type=action,ts=time)"
            )
        unknown = cols.keys() - {*cls.EVENT_FIELDS, *cls.ITEM_FIELDS, "session"}
        if unknown:
            raise ValueError(f"--columns: unknown field(s) {', '.join(sorted(unknown))}")
        types = _pairs(type_map, "--types")
        bad = {v for v in types.values() if v not in (*CSV_EVENT_TYPES, DROP)}
        if bad:
            raise ValueError(
                f"--types maps onto unknown event type(s) {', '.join(sorted(bad))} "
                f"(expected {', '.join(CSV_EVENT_TYPES)}, or {DROP} to leave a type out)"
            )
        if timestamp_format not in TIMESTAMP_FORMATS:
            raise ValueError(f"--ts-format: expected one of {', '.join(TIMESTAMP_FORMATS)}")
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


UTC_SUFFIX = " UTC"
_ISO_OFFSET = re.compile(r"[+-]\d\d(?::?\d\d)?$")
_ISO_DATE_LEN = len("2019-10-01")
_ISO_DATE_DASH = len("2019")
_NAIVE_EPOCH = datetime(1970, 1, 1)


def _iso_epoch(text: str) -> tuple[float, str]:
    """Unix seconds of an ISO 8601 time, and its shape (separator and zone style) for the mixed-format check.

    ``T`` or a space between date and time, fractional seconds, ``Z``, ``±hh:mm`` / ``±hhmm`` / ``±hh``, or a
    trailing `` UTC``; a time without a zone is UTC (never the machine's local time, which would make a
    replay depend on where it runs).
    """
    zone = ""
    if text.endswith(UTC_SUFFIX):
        text, zone = text[: -len(UTC_SUFFIX)].rstrip(), "UTC"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is neither ISO 8601 nor a unix number") from None
    separator = "T" if "T" in text or "t" in text else "space" if " " in text else "date only"
    if not zone:
        if text[-1] in "Zz":
            zone = "Z"
        elif _ISO_OFFSET.search(text, _ISO_DATE_LEN):
            zone = "offset"
        else:
            zone = "no zone"
    shape = f"ISO 8601 ({separator}, {zone})"
    if parsed.tzinfo is None:  # as UTC; much faster than replace(tzinfo=UTC).timestamp(), and the same float
        return (parsed - _NAIVE_EPOCH).total_seconds(), shape
    return parsed.timestamp(), shape


class TimestampParser:
    """Turns one column's timestamps into Unix seconds, in one of :data:`TIMESTAMP_FORMATS`.

    ``auto`` accepts ISO 8601 (see :func:`_iso_epoch`) and unix numbers, seconds or milliseconds told apart
    by magnitude: above :data:`MAX_EVENT_TS` (year 5138 in seconds, 1973 in milliseconds) a number is
    milliseconds. The first timestamp read fixes the column's format; a later row in another format (unix
    seconds among milliseconds, ``Z`` among ``UTC``, ...) raises a :class:`ValueError` naming both lines.
    ``unix``, ``unix_ms`` and ``iso`` read only their own form and check nothing else.
    """

    def __init__(self, fmt: TimestampFormat | str = "auto") -> None:
        if fmt not in TIMESTAMP_FORMATS:
            raise ValueError(f"unknown timestamp format {fmt!r} (expected one of {', '.join(TIMESTAMP_FORMATS)})")
        self.fmt = fmt
        self.shape: str | None = None
        self.shape_line = 0

    def __call__(self, raw: str, lineno: int) -> float:
        text = raw.strip()
        if not text:
            raise ValueError("empty timestamp")
        if self.fmt == "iso":
            return _iso_epoch(text)[0]
        if self.fmt != "auto":
            value = _finite(text)
            return value / MS_PER_S if self.fmt == "unix_ms" else value
        if text[_ISO_DATE_DASH : _ISO_DATE_DASH + 1] == "-":  # YYYY-: no number; skips a costly failed float()
            ts, shape = _iso_epoch(text)
        else:
            try:
                value = float(text)
            except ValueError:
                ts, shape = _iso_epoch(text)
            else:
                if not math.isfinite(value):
                    raise ValueError(f"timestamp {text!r} is not a finite number")
                if abs(value) > MAX_EVENT_TS:
                    ts, shape = value / MS_PER_S, "unix milliseconds"
                else:
                    ts, shape = value, "unix seconds"
        if shape != self.shape:
            if self.shape is not None:
                raise ValueError(
                    f"timestamp {text!r} is {shape}, but this column's timestamps are {self.shape} (from line "
                    f"{self.shape_line}): a column must keep one format"
                )
            self.shape, self.shape_line = shape, lineno
        return ts


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"timestamp {text!r} is not a finite number")
    return value


def read_csv(
    path: Path | str, mapping: CsvMapping, limit: int | None = None, stats: ReplayStats | None = None
) -> Iterator[Record]:
    """A generic log; item attribute columns become an upsert whenever an item's attributes first appear or change.

    Blank lines are ignored; a row whose event name ``--types`` maps to ``drop`` is counted as dropped; any
    other row that cannot be read whole is skipped with its line and reason. A header that lacks a mapped
    column raises :class:`ValueError` before any row is read.
    """
    stats = stats if stats is not None else ReplayStats()
    out: list[Record] = []
    attrs_seen: dict[str, tuple[Any, ...]] = {}
    parse_ts = TimestampParser(mapping.timestamp_format)
    type_map = mapping.type_map
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter=mapping.delimiter)
        header: list[str] | None = next(reader, None) if mapping.has_header else None

        def col(name: str) -> int:
            if header is None:
                try:
                    return int(name)
                except ValueError:
                    raise ValueError(f"--no-header: column {name!r} must be a 0-based index") from None
            if name not in header:
                raise ValueError(f"column {name!r} is not in the header {header}")
            return header.index(name)

        if mapping.has_header and header is None:
            return
        i_user, i_item, i_type, i_ts = (col(getattr(mapping, f)) for f in CsvMapping.EVENT_FIELDS)
        item_idx = {f: col(getattr(mapping, f)) for f in CsvMapping.ITEM_FIELDS if getattr(mapping, f)}
        i_session = col(mapping.session) if mapping.session else None
        used_columns = [i_user, i_item, i_type, i_ts, *item_idx.values()]
        if i_session is not None:
            used_columns.append(i_session)
        width = 1 + max(used_columns)
        for lineno, row in enumerate(reader, start=2 if header is not None else 1):
            if not row:
                continue
            if limit is not None and stats.rows >= limit:
                break
            stats.rows += 1
            where = f"line {lineno}"
            if len(row) < width:
                stats.skip(where, f"expected at least {width} fields, got {len(row)}: {row!r}")
                continue
            raw_type = row[i_type]
            etype = type_map.get(raw_type)
            if etype is None:
                stats.skip(where, f"event type {raw_type!r} is not in --types (map it, or {raw_type}={DROP})")
                continue
            if etype == DROP:
                stats.drop(raw_type)
                continue
            try:
                ts = parse_ts(row[i_ts], lineno)
                item_id = row[i_item]
                event: dict[str, Any] = {"user_id": row[i_user], "type": etype, "ts": ts}
                if etype == "search":
                    event["query"] = item_id
                else:
                    event["item_id"] = item_id
                if i_session is not None and row[i_session]:
                    event["session_id"] = row[i_session]
                valid = event_from_dict(event)
                item: Item | None = None
                if item_idx and etype != "search":
                    attrs = tuple(row[i] for i in item_idx.values())
                    if attrs_seen.get(item_id) != attrs:
                        item = item_from_dict(_item_value(item_id, ts, item_idx, attrs))
                        attrs_seen[item_id] = attrs
            except (ValueError, InvalidMessage) as exc:
                stats.skip(where, str(exc))
                continue
            if item is not None:  # the row is valid as a whole: publish its upsert and its event
                out.append(Record("items", item.item_id, item.to_dict(), item.ts))
                stats.items += 1
            out.append(Record("events", valid.user_id, valid.to_dict(), valid.ts))
            stats.events += 1
    yield from _in_time_order(out)


def _item_value(item_id: str, ts: float, item_idx: dict[str, int], attrs: tuple[str, ...]) -> dict[str, Any]:
    value: dict[str, Any] = {"item_id": item_id, "title": "", "ts": ts}
    for name, raw in zip(item_idx, attrs, strict=True):
        if raw == "":
            continue
        if name == "price":
            try:
                value[name] = float(raw)
            except ValueError:
                raise ValueError(f"bad price {raw!r}") from None
        else:
            value[name] = raw
    return value


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
