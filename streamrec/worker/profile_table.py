"""The profiles table: a changelog-backed Faust table of serialised profiles, and the store the worker writes it by.

Profiles live in the Faust process (the table and its changelog give a worker that takes over partitions every
user's last state); the core reads and returns them as bytes, one value per changed user per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import faust

from streamrec.io.kafka import OutMessage
from streamrec.model.profiles import applied_count
from streamrec.settings import Settings

PROFILE_TABLE = "profiles"


def changelog_topic(settings: Settings) -> str:
    """The profiles table's changelog (Faust's name for it: ``<app id>-<table>-changelog``)."""
    return f"{settings.kafka.app_id}-{PROFILE_TABLE}-changelog"


def applied_events(raw: bytes | None) -> int:
    """How many events a serialised profile has applied (its version: +1 per applied event); -1 for none."""
    return -1 if raw is None else applied_count(raw)


class ProfileTable(faust.Table):  # type: ignore[misc]
    """The profiles table, whose changelog replay never moves a user's state backwards.

    Faust replays changelog records into the in-memory table at every rebalance, also for the partitions a
    worker keeps, and only up to the end offsets it read when recovery started; the worker's own newest
    writes may not be in the changelog yet, so such a replay can put older profiles over newer ones and lose
    the events in between, already consumed (docs/resilience.md). A profile's applied-event count only grows,
    so a record that has applied fewer events than the profile in memory is stale and is skipped; deletions
    (tombstones) always apply.
    """

    def apply_changelog_batch(self, batch: Any) -> None:
        best: dict[Any, int] = {}
        fresh = []
        for e in batch:
            if e.message.value is None:
                best[e.key] = -1
                fresh.append(e)
                continue
            n = applied_events(e.message.value)
            if e.key not in best:
                best[e.key] = applied_events(self.data.get(e.key))
            if n >= best[e.key]:
                best[e.key] = n
                fresh.append(e)
        super().apply_changelog_batch(fresh)


class TableProfileStore:
    """The worker's profiles: a Faust table of serialised profiles, keyed by UTF-8 user id.

    The core gets a batch's profiles as bytes (:meth:`raw_for`) and hands back the changed ones, one value per
    user per batch; :meth:`write` puts them in the table and returns the changelog records, each for its user's
    changelog partition (the partition of the event that changed it), for the worker to send with the batch's
    other output (:func:`~streamrec.io.kafka.send_batched`). That is what a Faust table assignment does, less a
    buffered send and a future per user.
    """

    def __init__(self, table: Any, changelog: str) -> None:
        self.table = table
        self.changelog = changelog

    def raw_for(self, user_ids: Iterable[str]) -> dict[str, bytes | None]:
        get = self.table.get
        return {u: get(u.encode()) for u in user_ids}

    def write(
        self,
        changes: Mapping[str, bytes | None],
        partitions: Mapping[str, int],
        tombstones: Mapping[str, Iterable[int]] | None = None,
    ) -> list[OutMessage]:
        """Put a batch's changed profiles in the table (None: delete) and return their changelog records.

        ``tombstones`` (per user erased by a forget request, the changelog partitions their records may be on)
        come first, then each change for ``partitions[user id]`` (the changelog partition of that user: the
        partition of their latest event in the batch); a deletion of a user with no event in the batch has
        only its ``tombstones``. A tombstone goes out even for a key not held here: the changelog may hold state
        this worker never had in its table (a record recovery stopped short of), and compaction only erases a
        key's values behind a tombstone.
        """
        data = self.table.data
        records: list[OutMessage] = []
        for user_id, parts in (tombstones or {}).items():
            key = user_id.encode()
            records += [(self.changelog, p, key, None) for p in sorted(parts)]
        for user_id, raw in changes.items():
            key = user_id.encode()
            if raw is None:
                data.pop(key, None)
                if user_id not in partitions:
                    continue
            else:
                data[key] = raw
            records.append((self.changelog, partitions[user_id], key, raw))
        return records
