"""Message contracts: typed records, fast validation and orjson encoding for every topic's value.

The JSON Schemas in ``topics/`` are the published contract; the validators here are hand-written for
speed on the hot path and are tested to agree with those schemas. Anything that fails validation raises
:class:`InvalidMessage` with a human-readable reason, which the workers route to ``dead-letters``.

>>> parse_event(b'{"user_id": "u1", "item_id": "i9", "type": "click", "ts": 12.5}')
Event(user_id='u1', type='click', ts=12.5, item_id='i9', query=None, session_id=None, event_id=None, context=None)
>>> parse_event(b'{"user_id": "u1", "type": "like", "ts": 1}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamrec.model.events.InvalidMessage: unknown event type 'like' (expected one of view, click, ..., hide)
>>> parse_event(b'{"user_id": "u1", "type": "forget_user", "ts": 3}').is_forget
True
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import orjson

EventType = Literal["view", "click", "add_to_cart", "purchase", "search", "forget_user", "hide"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
FORGET_USER = "forget_user"
"""A privacy request on the events topic: delete everything kept about ``user_id`` (ordered with their events)."""
HIDE = "hide"
""""Not interested": ``item_id`` is never recommended to the user again, or, without an item, the category in
``context.category`` (until ``forget_user``)."""
#: Event types that carry an item and are training labels for the ranker (view is a weak one).
ITEM_EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})
EmbeddingSource = Literal["text", "category", "id"]

MAX_ID_LEN = 256
MAX_QUERY_LEN = 1024
MAX_TITLE_LEN = 1024
MAX_DESCRIPTION_LEN = 16384
MAX_ATTR_LEN = 256
DEFAULT_MAX_BYTES = 64 * 1024
MAX_EVENT_TS = 1e11
"""Largest accepted event ``ts`` (year 5138): anything above is almost surely milliseconds, not Unix seconds,
and would push the worker's decay clocks millennia ahead of every real event."""


class InvalidMessage(ValueError):
    """A message that does not meet its topic's contract; ``str(exc)`` is the dead-letter reason."""


def _fields(obj: object, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    """A message's JSON object: every required field, and the optional ones that are set."""
    out = {name: getattr(obj, name) for name in required}
    out.update((name, value) for name in optional if (value := getattr(obj, name)) is not None)
    return out


@dataclass(frozen=True, slots=True)
class Event:
    """One user interaction (or a search)."""

    user_id: str
    type: str
    ts: float
    item_id: str | None = None
    query: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    context: dict[str, Any] | None = None

    @property
    def is_forget(self) -> bool:
        """A ``forget_user`` privacy request rather than an interaction."""
        return self.type == FORGET_USER

    @property
    def hidden_category(self) -> str | None:
        """The category a ``hide`` event without an item hides (None for any other event)."""
        if self.type != HIDE or self.item_id is not None or self.context is None:
            return None
        return self.context.get("category")

    def to_dict(self) -> dict[str, Any]:
        return _fields(self, ("user_id", "type", "ts"), ("item_id", "query", "session_id", "event_id", "context"))


@dataclass(frozen=True, slots=True)
class Item:
    """One catalogue upsert. ``title`` may be empty for catalogues that only know ids and categories."""

    item_id: str
    title: str
    ts: float
    description: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _fields(self, ("item_id", "title", "ts"), ("description", "category", "brand", "price"))

    @property
    def has_text(self) -> bool:
        return bool(self.title.strip() or (self.description or "").strip())


@dataclass(frozen=True, slots=True)
class ItemWithdrawal:
    """An item leaves the catalogue (sold out, delisted): a tombstone (``ts`` None) or ``"available": false``.

    A later upsert brings it back (one older than ``ts`` is stale and ignored, as for upserts).
    """

    item_id: str
    ts: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The withdrawal record on ``items`` and ``item-embeddings`` (a tombstone carries no value at all)."""
        return {"item_id": self.item_id, "available": False, "ts": self.ts or 0.0}


@dataclass(frozen=True, slots=True)
class ItemEmbedding:
    """An item's attributes plus its L2-normalised embedding, as published by the encoder worker."""

    item: Item
    vector: np.ndarray
    model: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        out = self.item.to_dict()
        out.pop("description", None)  # the recommender needs attributes, not the long text
        out.update(
            embedding=base64.b64encode(np.ascontiguousarray(self.vector, dtype="<f4").tobytes()).decode("ascii"),
            dim=int(self.vector.shape[0]),
            model=self.model,
            source=self.source,
        )
        return out


# --------------------------------------------------------------------------------------------------------
# Field checks


def loads_message(raw: bytes | str, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidMessage("empty message (null value)")
    size = len(raw)
    if size > max_bytes:
        raise InvalidMessage(f"payload of {size} bytes exceeds the limit of {max_bytes} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_keys(obj: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    extra = obj.keys() - allowed
    if extra:
        raise InvalidMessage(f"unknown field(s) in {what}: {', '.join(sorted(extra))}")


def _id(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidMessage(f"missing required field '{name}'")
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"field '{name}' must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LEN:
        raise InvalidMessage(f"field '{name}' must have 1..{MAX_ID_LEN} characters")
    return value


def _text(obj: dict[str, Any], name: str, max_len: int, required: bool = False, min_len: int = 0) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidMessage(f"missing required field '{name}'")
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"field '{name}' must be a string, got {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        raise InvalidMessage(f"field '{name}' must have {min_len}..{max_len} characters")
    return value


def _number(obj: dict[str, Any], name: str, required: bool) -> float | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidMessage(f"missing required field '{name}'")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMessage(f"field '{name}' must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidMessage(f"field '{name}' must be finite, got {value}")
    if value < 0:
        raise InvalidMessage(f"field '{name}' must be >= 0, got {value}")
    return value


_EVENT_KEYS = frozenset({"event_id", "user_id", "item_id", "type", "ts", "query", "session_id", "context"})
_ITEM_KEYS = frozenset({"item_id", "title", "description", "category", "brand", "price", "ts", "available"})
_EMBEDDING_KEYS = frozenset(_ITEM_KEYS - {"description"} | {"embedding", "dim", "model", "source"})
_WITHDRAWAL_KEYS = frozenset({"item_id", "available", "ts"})


def event_from_dict(obj: dict[str, Any]) -> Event:
    """Validate a decoded event object (the ``events`` topic contract)."""
    _check_keys(obj, _EVENT_KEYS, "event")
    user_id = _id(obj, "user_id")
    etype = obj.get("type")
    if etype is None:
        raise InvalidMessage("missing required field 'type'")
    if etype not in EVENT_TYPES:
        raise InvalidMessage(f"unknown event type {etype!r} (expected one of {', '.join(EVENT_TYPES)})")
    ts = _number(obj, "ts", required=True)
    if ts > MAX_EVENT_TS:  # type: ignore[operator]
        raise InvalidMessage(f"field 'ts' must be Unix seconds <= {MAX_EVENT_TS:.0f}, got {ts} (milliseconds?)")
    context = obj.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidMessage("field 'context' must be an object")
    if etype == HIDE:  # an item, or (without one) the category in context.category
        query = _text(obj, "query", MAX_QUERY_LEN, min_len=1)
        item_id = _id(obj, "item_id", required=False)
        if item_id is None:
            category = (context or {}).get("category")
            if not isinstance(category, str) or not 1 <= len(category) <= MAX_ATTR_LEN:
                raise InvalidMessage(
                    f"a hide event needs 'item_id' or a 'context.category' of 1..{MAX_ATTR_LEN} characters"
                )
    elif etype == "search":
        query = _text(obj, "query", MAX_QUERY_LEN, required=True, min_len=1)
        item_id = _id(obj, "item_id", required=False)
    elif etype == FORGET_USER:  # only the user matters; an item or query is allowed but ignored
        query = _text(obj, "query", MAX_QUERY_LEN, min_len=1)
        item_id = _id(obj, "item_id", required=False)
    else:
        query = _text(obj, "query", MAX_QUERY_LEN, min_len=1)
        item_id = _id(obj, "item_id")
    return Event(
        user_id=user_id,  # type: ignore[arg-type]
        type=etype,
        ts=ts,  # type: ignore[arg-type]
        item_id=item_id,
        query=query,
        session_id=_text(obj, "session_id", MAX_ATTR_LEN),
        event_id=_id(obj, "event_id", required=False),
        context=context,
    )


def _available(obj: dict[str, Any]) -> bool:
    value = obj.get("available", True)
    if not isinstance(value, bool):
        raise InvalidMessage(f"field 'available' must be true or false, got {type(value).__name__}")
    return value


def withdrawal_from_dict(obj: dict[str, Any]) -> ItemWithdrawal | None:
    """The withdrawal an ``items``/``item-embeddings`` object is (``"available": false``), or None for an upsert.

    The other attributes a withdrawal may carry (a shop may send the whole item, sold out) must still be valid.
    """
    if _available(obj):
        return None
    item_from_dict({"title": "", **obj, "available": True})
    return ItemWithdrawal(_id(obj, "item_id"), _number(obj, "ts", required=True))  # type: ignore[arg-type]


def item_record_from_dict(obj: dict[str, Any]) -> Item | ItemWithdrawal:
    """Validate a decoded ``items`` value: an upsert, or a withdrawal (``"available": false``)."""
    _check_keys(obj, _ITEM_KEYS, "item")
    return withdrawal_from_dict(obj) or item_from_dict(obj)


def item_from_dict(obj: dict[str, Any], allowed: frozenset[str] = _ITEM_KEYS) -> Item:
    """Validate a decoded item upsert (the ``items`` topic contract; ``available`` may only be true here)."""
    _check_keys(obj, allowed, "item")
    if not _available(obj):
        raise InvalidMessage("an item with 'available': false is a withdrawal, not an upsert")
    return Item(
        item_id=_id(obj, "item_id"),  # type: ignore[arg-type]
        title=_text(obj, "title", MAX_TITLE_LEN, required=True),  # type: ignore[arg-type]
        ts=_number(obj, "ts", required=True),  # type: ignore[arg-type]
        description=_text(obj, "description", MAX_DESCRIPTION_LEN),
        category=_text(obj, "category", MAX_ATTR_LEN),
        brand=_text(obj, "brand", MAX_ATTR_LEN),
        price=_number(obj, "price", required=False),
    )


def parse_event(raw: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    return event_from_dict(loads_message(raw, max_bytes))


def parse_item(raw: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Item:
    return item_from_dict(loads_message(raw, max_bytes))


def parse_item_record(
    key: bytes | None, raw: bytes | str | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Item | ItemWithdrawal:
    """An ``items`` record: an upsert, or a withdrawal (a tombstone — the key names the item — or
    ``"available": false``)."""
    if raw is None:
        return _tombstone(key)
    return item_record_from_dict(loads_message(raw, max_bytes))


def _tombstone(key: bytes | None) -> ItemWithdrawal:
    try:
        item_id = (key or b"").decode()
    except UnicodeDecodeError:
        raise InvalidMessage("a tombstone's key must be the item id in UTF-8") from None
    if not 1 <= len(item_id) <= MAX_ID_LEN:
        raise InvalidMessage(f"a tombstone's key must be the item id (1..{MAX_ID_LEN} characters)")
    return ItemWithdrawal(item_id)


def parse_embedding_record(
    key: bytes | None, raw: bytes | str | None, max_bytes: int = 1 << 20
) -> ItemEmbedding | ItemWithdrawal:
    """An ``item-embeddings`` record: an embedding, or a withdrawal passed on by the encoder (a tombstone, or
    ``{"item_id", "available": false, "ts"}``)."""
    if raw is None:
        return _tombstone(key)
    obj = loads_message(raw, max_bytes)
    if obj.get("available", True) is not True and "embedding" not in obj:
        _check_keys(obj, _WITHDRAWAL_KEYS, "item withdrawal")
        withdrawal = withdrawal_from_dict(obj)
        if withdrawal is not None:
            return withdrawal
    return _embedding_from_dict(obj)


def parse_item_embedding(raw: bytes | str, max_bytes: int = 1 << 20) -> ItemEmbedding:
    return _embedding_from_dict(loads_message(raw, max_bytes))


def _embedding_from_dict(obj: dict[str, Any]) -> ItemEmbedding:
    for name in ("embedding", "dim", "model", "source"):
        if name not in obj:
            raise InvalidMessage(f"missing required field '{name}'")
    attrs = {k: v for k, v in obj.items() if k in _ITEM_KEYS}
    item = item_from_dict(attrs)
    _check_keys(obj, _EMBEDDING_KEYS, "item embedding")
    try:
        vector = np.frombuffer(base64.b64decode(obj["embedding"], validate=True), dtype="<f4")
    except (ValueError, TypeError) as exc:
        raise InvalidMessage(f"field 'embedding' is not base64 float32: {exc}") from None
    if vector.shape[0] != obj["dim"] or not np.all(np.isfinite(vector)):
        raise InvalidMessage("field 'embedding' has the wrong length or non-finite values")
    if obj["source"] not in get_args(EmbeddingSource):
        raise InvalidMessage(f"unknown embedding source {obj['source']!r}")
    return ItemEmbedding(item=item, vector=vector.astype(np.float32), model=str(obj["model"]), source=obj["source"])


def dumps(obj: dict[str, Any]) -> bytes:
    """orjson encoding used for every value streamrec publishes."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def dead_letter(
    source_topic: str,
    value: bytes | None,
    reason: str,
    key: bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """The ``dead-letters`` record for a rejected message: the original bytes, unchanged, plus why."""
    return {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key_b64": None if key is None else base64.b64encode(key).decode("ascii"),
        "value_b64": base64.b64encode(value or b"").decode("ascii"),
        "reason": reason,
        "ts": time.time(),
    }
