"""Item-level collaborative statistics shared across workers: co-visitation, co-embeddings, popularity.

Each worker holds only its users' profiles, but what one user does teaches something about *items* that
every worker's users benefit from: which items are visited after which (co-visitation, co-embeddings) and
what is popular. With the events split by user, a worker alone would learn these from its share of the
users only, and quality drops as workers are added (docs/resilience.md). So the core records,
per batch, the item updates its events made — ``(item, the user's previous items, weight, time)``, exactly
what it folds into its own item statistics (:meth:`Recommender.fold_item_event`) — each worker publishes
them to the ``item-updates`` topic, and applies its peers' (:meth:`Recommender.apply_item_updates`). User
state stays with the partition's owner.

>>> msgs = encode_updates([ItemUpdate("a", ("z",), 0.3, 1.0), ItemUpdate("b", ("z", "a"), 3.0, 2.0)], 1)
>>> len(msgs), decode_updates(msgs[1])
(2, [ItemUpdate(item_id='b', previous=('z', 'a'), weight=3.0, ts=2.0)])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """One item event's effect on item-level statistics."""

    item_id: str
    previous: tuple[str, ...]
    """The user's recent items before the event (most recent last; as many as co-visitation looks at)."""
    weight: float
    ts: float

    def to_list(self) -> list[Any]:
        return [self.item_id, list(self.previous), self.weight, self.ts]

    @classmethod
    def from_list(cls, raw: Sequence[Any]) -> ItemUpdate:
        return cls(str(raw[0]), tuple(str(i) for i in raw[1]), float(raw[2]), float(raw[3]))


def encode_updates(updates: Sequence[ItemUpdate], per_message: int) -> list[bytes]:
    """``item-updates`` message values, at most ``per_message`` updates each (messages stay far below the
    broker's size limit whatever the batch size)."""
    return [
        orjson.dumps({"updates": [u.to_list() for u in updates[i : i + per_message]]})
        for i in range(0, len(updates), per_message)
    ]


def decode_updates(raw: bytes) -> list[ItemUpdate]:
    """The updates of one ``item-updates`` message; ValueError/KeyError/TypeError/IndexError if malformed."""
    return [ItemUpdate.from_list(u) for u in orjson.loads(raw)["updates"]]
