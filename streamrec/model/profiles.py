"""Per-user behaviour state: a decayed long-term embedding, a short-term intent, and bounded recent lists.

The long-term embedding is a time-decayed, event-type-weighted sum of the embeddings of the items a user
touched; the intent vector is the same with a much shorter half-life (plus search queries), so that what
the user does right now dominates it. Decay runs on *event* time, so replaying a log gives the same state
as living through it. State is bounded (recent items, categories, purchases) and serialises to compact
bytes (int8 vectors with a per-vector scale) for the changelog-backed Faust table.

>>> import numpy as np
>>> from streamrec.settings import ProfileSettings
>>> from streamrec.model.events import Event
>>> p = UserProfile.new("u1", dim=2)
>>> apply_event(p, Event("u1", "purchase", ts=0.0, item_id="a"), np.array([1.0, 0.0]), "shoes", ProfileSettings())
True
>>> p.purchased, p.recent, round(p.categories["shoes"], 2)
(['a'], ['a'], 3.0)
>>> UserProfile.from_bytes(p.to_bytes()).recent
['a']
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import orjson

from streamrec.model.events import Event
from streamrec.model.numeric import decay
from streamrec.settings import ProfileSettings

FORMAT_VERSION = 4
"""The format written: format 3's layout and a flags byte after the scales, the intent vector left out when it
equals the long-term one (a user's first event gives both the same vector)."""
READABLE_VERSIONS = (3, 4)
"""Formats read: 3 (earlier releases; rewritten as 4 with the user's next event); 1 and 2 were pre-release and
are refused."""
MAGIC = b"\xa7"
"""First byte of a stored profile."""
HEADER = struct.Struct("<cBQdH")
"""magic, format version, applied events, last event time, embedding dimension."""
SCALES = struct.Struct("<ff")
"""The largest absolute component of the long-term and of the intent vector."""
FLAGS = struct.Struct("<B")
"""Format 4: what follows the scales."""
SHARED_INTENT = 1
"""Flag: one vector follows, the long-term one, and the intent is equal to it (its scale too)."""
INT8_LEVELS = 127
"""Each component is stored as round(v / max|v| · 127): a quarter of float32; the rounding on every write leaves
the quality unchanged (docs/performance.md, "Where the memory goes")."""


class ProfileFormatError(ValueError):
    """A stored profile this version of streamrec cannot read (written by a newer or a pre-release one, or not
    a profile)."""


@dataclass(slots=True)
class UserProfile:
    """Everything streamrec keeps about one user (bounded in size)."""

    user_id: str
    long_term: np.ndarray
    intent: np.ndarray
    last_ts: float = 0.0
    events: int = 0
    recent: list[str] = field(default_factory=list)
    categories: dict[str, float] = field(default_factory=dict)
    purchased: list[str] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    """Highest applied source offset per partition: makes re-delivered events no-ops."""
    hidden_items: list[str] = field(default_factory=list)
    """Items the user said they are not interested in (``hide``): never recommended to them again."""
    hidden_categories: list[str] = field(default_factory=list)
    """Categories the user hid: none of their items is recommended to them again."""

    @classmethod
    def new(cls, user_id: str, dim: int) -> UserProfile:
        return cls(user_id=user_id, long_term=np.zeros(dim, np.float32), intent=np.zeros(dim, np.float32))

    def to_bytes(self) -> bytes:
        """The changelog record: a fixed binary header, the two vectors as int8 with their scales, then the
        lists as JSON.

        Exactly sized: an ``orjson.dumps`` result keeps its whole working buffer (many times the profile's
        size), and the table holds one per user, so the parts are joined into a fresh bytes object. The header
        makes :func:`applied_count` a fixed-offset read.
        """
        (long_scale, long_q), (intent_scale, intent_q) = _quantise(self.long_term), _quantise(self.intent)
        return self._record(long_scale, long_q, intent_scale, intent_q)

    def _record(self, long_scale: float, long_q: bytes, intent_scale: float, intent_q: bytes) -> bytes:
        """The record of :meth:`to_bytes` around the already quantised vectors."""
        fields = {
            "u": self.user_id,
            "r": self.recent,
            "c": self.categories,
            "p": self.purchased,
            "o": {str(k): v for k, v in self.offsets.items()},
        }
        # optional keys, written only when set: a profile without hides is byte for byte what it was before them
        if self.hidden_items:
            fields["hi"] = self.hidden_items
        if self.hidden_categories:
            fields["hc"] = self.hidden_categories
        lists = orjson.dumps(fields)
        head = HEADER.pack(MAGIC, FORMAT_VERSION, self.events, self.last_ts, len(self.long_term))
        shared = long_scale == intent_scale and long_q == intent_q
        vectors = (FLAGS.pack(SHARED_INTENT), long_q) if shared else (FLAGS.pack(0), long_q, intent_q)
        return b"".join((head, SCALES.pack(long_scale, intent_scale), *vectors, lists))

    @classmethod
    def from_bytes(cls, raw: bytes) -> UserProfile:
        """A profile from its stored record (formats 3 and 4); :class:`ProfileFormatError` for anything else.

        A record in another format is refused rather than guessed at: after a rollback, a newer worker's
        records would otherwise be read with the wrong layout and silently corrupt the user's state.
        """
        version, events, last_ts, dim = _header(raw)
        start = HEADER.size
        long_scale, intent_scale = SCALES.unpack_from(raw, start)
        start += SCALES.size
        shared = False
        if version >= 4:
            shared = bool(FLAGS.unpack_from(raw, start)[0] & SHARED_INTENT)
            start += FLAGS.size
        intent_at = start if shared else start + dim
        long_term = _dequantise(np.frombuffer(raw, np.int8, dim, start), long_scale)
        # two arrays even when stored once: each event decays them apart, in place
        intent = _dequantise(np.frombuffer(raw, np.int8, dim, intent_at), intent_scale)
        d = orjson.loads(memoryview(raw)[intent_at + dim :])
        return cls(
            user_id=d["u"],
            long_term=long_term,
            intent=intent,
            last_ts=last_ts,
            events=events,
            recent=d["r"],
            categories=d["c"],
            purchased=d["p"],
            offsets={int(k): v for k, v in d["o"].items()},
            hidden_items=d.get("hi", []),
            hidden_categories=d.get("hc", []),
        )

    def already_applied(self, partition: int | None, offset: int | None) -> bool:
        """True when this (partition, offset) was applied before — an at-least-once redelivery."""
        if partition is None or offset is None:
            return False
        return offset <= self.offsets.get(partition, -1)


def applied_count(raw: bytes) -> int:
    """How many events a stored profile has applied, read from its header; :class:`ProfileFormatError` for a
    record :meth:`UserProfile.from_bytes` would refuse."""
    return _header(raw)[1]


def _header(raw: bytes) -> tuple[int, int, float, int]:
    """(format, applied events, last event time, embedding dimension) of a record in a readable format, or
    :class:`ProfileFormatError` saying why the record is not one."""
    if raw[:1] != MAGIC or len(raw) < HEADER.size:
        raise ProfileFormatError(
            "not a stored profile (format-1 JSON profiles were pre-release and are no longer read):"
            f" starts with {bytes(raw[:8])!r}"
        )
    _, version, events, last_ts, dim = HEADER.unpack_from(raw)
    readable = " and ".join(map(str, READABLE_VERSIONS))
    if version < READABLE_VERSIONS[0]:
        raise ProfileFormatError(
            f"profile format {version} is from a pre-release streamrec and no longer read (only formats"
            f" {readable}): remove the user's profile to start afresh"
        )
    if version not in READABLE_VERSIONS:
        raise ProfileFormatError(
            f"profile format {version} is not one this streamrec reads (only formats {readable}): it was"
            " written by a newer version; run that version, or remove the user's profile to start afresh"
        )
    return int(version), int(events), float(last_ts), int(dim)


def _quantise(v: np.ndarray) -> tuple[float, bytes]:
    """(max|v|, int8 components): what :func:`_dequantise` turns back into a vector (zeros stay zeros)."""
    peak = np.float32(np.abs(v).max()) if len(v) else np.float32(0.0)
    if not peak > 0.0:
        return 0.0, bytes(len(v))
    q = np.rint(np.asarray(v, np.float32) / peak * np.float32(INT8_LEVELS))
    return float(peak), np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8).tobytes()


def profiles_to_bytes(profiles: Sequence[UserProfile]) -> list[bytes]:
    """:meth:`UserProfile.to_bytes` of many profiles, to the same bytes, with all their vectors quantised in one
    pass (the same float32 operations as :func:`_quantise`, row by row) instead of two small passes a profile."""
    dim = len(profiles[0].long_term) if profiles else 0
    if not dim or any(len(p.long_term) != dim or len(p.intent) != dim for p in profiles):
        return [p.to_bytes() for p in profiles]
    vectors = np.empty((2 * len(profiles), dim), np.float32)
    for i, profile in enumerate(profiles):
        vectors[2 * i] = profile.long_term
        vectors[2 * i + 1] = profile.intent
    peaks = np.abs(vectors).max(axis=1)
    scaled = peaks > 0.0  # NaN peaks too are stored as zeros, as _quantise stores them
    with np.errstate(invalid="ignore"):  # rows that are not finite are zeroed below
        q = np.rint(vectors / np.where(scaled, peaks, np.float32(1.0))[:, None] * np.float32(INT8_LEVELS))
        q = np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    q[~scaled] = 0
    scales = np.where(scaled, peaks, np.float32(0.0)).tolist()
    return [
        p._record(scales[2 * i], q[2 * i].tobytes(), scales[2 * i + 1], q[2 * i + 1].tobytes())
        for i, p in enumerate(profiles)
    ]


def _dequantise(q: np.ndarray, peak: float) -> np.ndarray:
    """The int8 components back as float32; the largest comes back as exactly ``peak``, so a profile read and
    written unchanged gives the same bytes."""
    return (q.astype(np.float32) / np.float32(INT8_LEVELS)) * np.float32(peak)


def _push_bounded(seq: list[str], value: str, limit: int) -> None:
    """Append ``value`` as the newest entry (moving it if present), keeping at most ``limit`` entries."""
    if value in seq:
        seq.remove(value)
    seq.append(value)
    if len(seq) > limit:
        del seq[: len(seq) - limit]


def apply_event(
    profile: UserProfile,
    event: Event,
    vector: np.ndarray | None,
    category: str | None,
    cfg: ProfileSettings,
    partition: int | None = None,
    offset: int | None = None,
) -> bool:
    """Fold one event into the profile; returns False (and changes nothing) for a redelivered event.

    ``vector`` is the item's embedding (or the query's, for a search); None when the item is not embedded
    yet — the recent/category/purchase state still updates so collaborative signals keep working.
    """
    if profile.already_applied(partition, offset):
        return False
    dt = event.ts - profile.last_ts if profile.events else 0.0
    long_decay = decay(dt, cfg.profile_half_life_s)
    intent_decay = decay(dt, cfg.intent_half_life_s)
    weight = cfg.event_weight(event.type)
    profile.long_term *= long_decay
    profile.intent *= intent_decay
    if vector is not None:
        if event.type != "search":
            profile.long_term += weight * vector
        profile.intent += weight * vector
    if event.item_id is not None:
        _push_bounded(profile.recent, event.item_id, cfg.recent_items)
        if event.type == "purchase":
            _push_bounded(profile.purchased, event.item_id, cfg.max_purchased)
    if category is not None:
        cats = profile.categories
        for key in cats:
            cats[key] *= long_decay
        cats[category] = cats.get(category, 0.0) + weight
        if len(cats) > cfg.max_categories:
            weakest = min(cats, key=cats.__getitem__)
            del cats[weakest]
    profile.last_ts = max(profile.last_ts, event.ts)
    profile.events += 1
    if partition is not None and offset is not None:
        profile.offsets[partition] = offset
    return True


def apply_hide(
    profile: UserProfile, event: Event, cfg: ProfileSettings, partition: int | None = None, offset: int | None = None
) -> bool:
    """Fold a ``hide`` event in: remember the hidden item, or (without one) the category in ``context.category``.

    Nothing else changes (a hide is no interest: no taste, recency or category weight, and the decay clock of
    the profile stays where the user's last interaction left it); returns False for a redelivered event.
    """
    if profile.already_applied(partition, offset):
        return False
    if event.item_id is not None:
        _push_bounded(profile.hidden_items, event.item_id, cfg.max_hidden)
    else:
        category = event.hidden_category
        if category is not None:
            _push_bounded(profile.hidden_categories, category, cfg.max_hidden)
    profile.events += 1
    if partition is not None and offset is not None:
        profile.offsets[partition] = offset
    return True


def category_affinity(profile: UserProfile, categories: Iterable[str | None]) -> np.ndarray:
    """Share of the user's (decayed) category weight that each given category holds, in [0, 1]."""
    cats = profile.categories
    total = sum(cats.values())
    if total <= 0.0:
        return np.zeros(len(list(categories)) if not isinstance(categories, list) else len(categories))
    return np.array([cats.get(c, 0.0) / total if c is not None else 0.0 for c in categories], dtype=np.float32)


class ProfileStore(Protocol):
    """Where profiles live: a dict in evaluation and tests, a Faust table in the worker."""

    def get(self, user_id: str) -> UserProfile | None: ...

    def put(self, profile: UserProfile) -> None: ...

    def delete(self, user_id: str) -> None: ...


class DictProfileStore:
    """In-memory store for the evaluation harness and unit tests."""

    def __init__(self) -> None:
        self.data: dict[str, UserProfile] = {}

    def get(self, user_id: str) -> UserProfile | None:
        return self.data.get(user_id)

    def put(self, profile: UserProfile) -> None:
        self.data[profile.user_id] = profile

    def delete(self, user_id: str) -> None:
        self.data.pop(user_id, None)

    def __len__(self) -> int:
        return len(self.data)
