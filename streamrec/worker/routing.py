"""Which partition a user's events belong on, events that are elsewhere, and what a ``forget_user`` copy erases.

streamrec keeps a user's state with the partition of their events: the profile table is partitioned like
``events``. That holds only when producers put every event of a user on one partition, the murmur2 partition
of the user id (Kafka's Java client, kafkajs, aiokafka); librdkafka, sarama and kafka-go do not by default
(README, "Publishing from other clients"). :class:`Routes` counts events that are elsewhere and warns once per
partition; :func:`plan_forgets` decides which copies of a forget request (``streamrec forget`` publishes one
on every partition) erase this worker's state, so that the request reaches a user's state wherever it is.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from streamrec.io.kafka import key_partition
from streamrec.model.events import Event
from streamrec.model.profiles import ProfileFormatError, UserProfile

log = logging.getLogger(__name__)

HOME_CACHE_USERS = 65_536
"""User ids whose murmur2 partition is kept (pure-Python murmur2 costs far more per event than a dict lookup;
docs/performance.md); the cache starts over when full."""

MISROUTED_FIX = (
    "their producer does not partition by murmur2 of the user id, so a user's state can be split over partitions "
    "and workers, and their events lose their order. Fix the producer (README, 'Publishing from other clients': "
    "librdkafka partitioner=murmur2_random, sarama/kafka-go a murmur2 hasher) or run every worker with "
    "STREAMREC_REPARTITION=true"
)
MISROUTED_REKEYED = (
    "their producer does not partition by murmur2 of the user id. STREAMREC_REPARTITION=true re-keys them, so user "
    "state is right; a producer that partitions by murmur2 (README, 'Publishing from other clients') would save "
    "that extra copy of every event"
)


class Routes:
    """The murmur2 partition of each user id among a topic's partitions, and the count of events found elsewhere.

    Compared with the user id, not the message key: unkeyed events, or events keyed by something else, split a
    user's state just the same. Warns once per partition (never with a user id: personal data).
    """

    def __init__(self, partitions: int, topic: str, rekeyed: bool = False) -> None:
        self.partitions = list(range(partitions))
        self.topic = topic
        self.fix = MISROUTED_REKEYED if rekeyed else MISROUTED_FIX
        """What the warning tells the operator: fix the producer or re-key; or, when re-keyed, what it costs."""
        self.misrouted = 0
        self.warned: set[int] = set()
        self._home: dict[str, int] = {}

    def home(self, user_id: str) -> int:
        """The partition streamrec's producers (and every murmur2 producer) put ``user_id``'s events on."""
        p = self._home.get(user_id)
        if p is None:
            if len(self._home) >= HOME_CACHE_USERS:
                self._home.clear()
            p = self._home[user_id] = key_partition(user_id.encode(), self.partitions)
        return p

    def observe(self, user_id: str, partition: int) -> bool:
        """Check one event's partition; True (counted, and warned about once per partition) when it is misrouted."""
        if self.home(user_id) == partition:
            return False
        self.misrouted += 1
        if partition not in self.warned:
            self.warned.add(partition)
            log.warning(
                "%s partition %d holds events of users whose murmur2 partition is another: %s",
                self.topic,
                partition,
                self.fix,
            )
        return True


REKEYED_POSITIONS = 1 << 20
"""Events of the re-keyed topic (``repartition``) are recorded in profiles under partition ``REKEYED_POSITIONS + p``
(:func:`position_key`): its offsets start at 0, and compared with those of ``events``' own partitions they would
make a profile skip new events as redeliveries when re-keying is switched on (or off) for a running deployment."""
UNKNOWN_PARTITION = -1
"""Stands for the partitions of a stored profile this version cannot read: no worker owns it, so any forget copy
erases such a profile (:func:`stored_offsets`)."""


def position_key(partition: int, rekeyed: bool) -> int:
    """The partition number a profile records an event's offset under (a key of its per-partition offsets)."""
    return REKEYED_POSITIONS + partition if rekeyed else partition


def position_partition(key: int) -> int:
    """The partition of a profile's offsets key, of ``events`` or of the re-keyed topic alike."""
    return key % REKEYED_POSITIONS if key >= 0 else key


def stored_offsets(raw: bytes | None) -> dict[int, int]:
    """A stored profile's highest applied offset per partition ({} for none; unreadable: :data:`UNKNOWN_PARTITION`)."""
    if raw is None:
        return {}
    try:
        return dict(UserProfile.from_bytes(raw).offsets)
    except (ProfileFormatError, ValueError, KeyError, struct.error):
        return {UNKNOWN_PARTITION: -1}


@dataclass
class ForgetPlan:
    """What a batch's ``forget_user`` records do on this worker (:func:`plan_forgets`)."""

    keep: list[bool]
    """Per event of the batch: hand it to the core. False only for forget copies that leave the profile alone."""
    tombstones: dict[str, set[int]] = field(default_factory=dict)
    """Per user with a forget, the profile changelog partitions to write a tombstone to (before the batch's
    profiles)."""
    records: int = 0
    """``forget_user`` records in the batch, effective or not."""


def plan_forgets(
    events: Sequence[Event],
    positions: Sequence[tuple[int, int]],
    profile_offsets: Mapping[str, Mapping[int, int]],
    owned: Collection[int],
    home: Callable[[str], int],
) -> ForgetPlan:
    """Decide, in stream order, what each copy of a forget request does on this worker.

    ``positions``: each event's (partition, offset), the partition as profiles record it (:func:`position_key`);
    ``profile_offsets``: per user with a forget in the batch, the stored profile's highest applied offset per
    partition (so recorded); ``owned``: the partitions this worker holds, so recorded (a profile's events of
    ``events`` count as not owned once re-keying is on, and the other way round: no copy comes for them there).

    Every copy on partition p writes a tombstone to changelog partition p: whatever a record there holds was
    written by an event of p before the copy (records go to the partition of the event that wrote them), so every
    changelog partition is erased in its own order by its owner, whatever this worker's table holds.

    A copy also erases the profile in memory (and the core's state: the copy goes to the core) when the profile
    holds events from p (the copy is in order with them), or events from a partition this worker no longer owns
    (left behind by a rebalance: erased at once), or, on the user's murmur2 partition, when nothing is held. Else
    the profile holds only events of other partitions this worker owns, whose own copies order them, and this copy
    leaves it alone: with a murmur2 producer only the copy on the user's partition acts, so events the user sends
    after the request survive copies that arrive late on other partitions. An erased profile's tombstones also go
    to every owned partition it holds events from. A copy at an offset the profile has already passed on its
    partition was carried out before those events (a redelivery) and does nothing.
    """
    plan = ForgetPlan(keep=[True] * len(events))
    forgetting = {e.user_id for e in events if e.is_forget}
    if not forgetting:
        return plan
    held = {u: dict(profile_offsets.get(u, {})) for u in forgetting}
    owned = set(owned)
    owned_partitions = {position_partition(k) for k in owned}
    for i, (event, (key, offset)) in enumerate(zip(events, positions, strict=True)):
        user = event.user_id
        if user not in forgetting:
            continue
        offsets = held[user]
        if not event.is_forget:
            offsets[key] = max(offsets.get(key, -1), offset)
            continue
        plan.records += 1
        if offset <= offsets.get(key, -1):  # redelivered: the profile holds events sent after it
            plan.keep[i] = False
            continue
        partition = position_partition(key)
        erased = plan.tombstones.setdefault(user, set())
        erased.add(partition)
        if key in offsets or not offsets.keys() <= owned or (not offsets and partition == home(user)):
            erased.update({position_partition(k) for k in offsets} & owned_partitions)
            held[user] = {}
        else:
            plan.keep[i] = False
    return plan
