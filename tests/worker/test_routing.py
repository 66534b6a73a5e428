"""Misrouted events are counted and warned about once per partition; forget copies erase exactly what they must."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from streamrec.model.events import FORGET_USER, Event
from streamrec.model.profiles import UserProfile
from streamrec.worker import routing
from streamrec.worker.routing import (
    REKEYED_POSITIONS,
    UNKNOWN_PARTITION,
    Routes,
    plan_forgets,
    position_key,
    position_partition,
    stored_offsets,
)

# Kafka's own murmur2 test vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java), as signed
# 32-bit ints; the Java client's partition is toPositive(hash) % partitions.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}
PARTITIONS = 6
HOME = {"a": 0, "b": 1, "c": 2}
"""Made-up murmur2 partitions for the plan tests (the plan takes the function)."""


@pytest.mark.parametrize("partitions", [1, 6, 7, 32])
def test_home_is_the_java_clients_murmur2_partition(partitions: int) -> None:
    routes = Routes(partitions, "events")
    for key, signed in JAVA_MURMUR2.items():
        assert routes.home(key) == (signed & 0x7FFFFFFF) % partitions


def test_misrouted_events_are_counted_exactly_and_warned_about_once_per_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes = Routes(PARTITIONS, "events")
    users = [f"user-{n}" for n in range(50)]
    rng = np.random.default_rng(1)
    placed = [(u, int(rng.integers(PARTITIONS))) for u in users for _ in range(4)]
    expected = sum(1 for u, p in placed if p != routes.home(u))
    with caplog.at_level(logging.WARNING, logger=routing.__name__):
        flagged = [routes.observe(u, p) for u, p in placed]
    assert sum(flagged) == routes.misrouted == expected > 0
    assert [routes.observe(u, routes.home(u)) for u in users] == [False] * len(users)
    assert routes.misrouted == expected
    warned = [r.getMessage() for r in caplog.records]
    wrong_partitions = {p for u, p in placed if p != routes.home(u)}
    assert len(warned) == len(wrong_partitions) == len(routes.warned)
    assert all("STREAMREC_REPARTITION=true" in w and "murmur2_random" in w for w in warned)
    assert not any(u in w for w in warned for u in users)  # user ids are personal data


def test_the_home_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "HOME_CACHE_USERS", 3)
    routes = Routes(PARTITIONS, "events")
    fresh = Routes(PARTITIONS, "events")
    for n in range(10):
        assert routes.home(f"u{n}") == fresh.home(f"u{n}")
        assert len(routes._home) <= 3


def forget(user: str) -> Event:
    return Event(user, FORGET_USER, 1.0)


def view(user: str) -> Event:
    return Event(user, "view", 1.0, item_id="i")


def test_with_a_murmur2_producer_only_the_copy_on_the_users_partition_erases() -> None:
    # user a lives on partition 0; copies arrive on 1 and 2 before it, and on 3 late, after a's next event
    events = [forget("a"), forget("a"), view("a"), forget("a"), view("a"), forget("a")]
    positions = [(1, 10), (2, 10), (0, 5), (0, 6), (0, 7), (3, 10)]
    plan = plan_forgets(events, positions, {"a": {0: 4}}, {0, 1, 2, 3}, HOME.__getitem__)
    assert plan.keep == [False, False, True, True, True, False]  # the late copy leaves the new profile alone
    assert plan.tombstones == {"a": {0, 1, 2, 3}}  # each copy its own partition: a has no records on 1, 2, 3
    assert plan.records == 4


def test_a_user_with_no_state_here_is_forgotten_by_the_core_on_their_partition_only() -> None:
    events = [forget("b"), forget("b"), forget("b")]
    plan = plan_forgets(events, [(0, 1), (1, 1), (2, 1)], {}, {0, 1, 2}, HOME.__getitem__)
    assert plan.keep == [False, True, False]
    assert plan.tombstones == {"b": {0, 1, 2}}


def test_state_from_a_misrouting_producer_is_erased_by_the_copies_on_its_partitions() -> None:
    # c's murmur2 partition is 2, but a round-robin producer put its events on 0 and 4 (both owned here)
    events = [forget("c"), forget("c"), view("c"), forget("c")]
    positions = [(2, 1), (4, 9), (0, 3), (0, 4)]
    plan = plan_forgets(events, positions, {"c": {0: 2, 4: 8}}, {0, 2, 4}, HOME.__getitem__)
    # copy on 2: c's profile holds only events of 0 and 4, whose own copies order them: left alone;
    # copy on 4 erases (tombstones on 4 and 0, where its records may be); the copy on 0 erases the event of 0
    # that came after the copy on 4 in this batch (sent before the request on partition 0)
    assert plan.keep == [False, True, True, True]
    assert plan.tombstones == {"c": {0, 2, 4}}


def test_state_left_from_partitions_this_worker_no_longer_owns_is_erased_by_any_copy() -> None:
    plan = plan_forgets([forget("a")], [(3, 1)], {"a": {0: 7, 5: 2}}, {3, 5}, HOME.__getitem__)
    assert plan.keep == [True]
    assert plan.tombstones == {"a": {3, 5}}  # not partition 0: its new owner erases it with its own copy


def test_a_copy_tombstones_its_partition_even_when_the_table_lost_the_user() -> None:
    # a peer's tombstone (replayed into this worker's table) removed the user from memory: the records this
    # worker wrote on its own partitions 3 and 4 are still erased, each by the copy on it
    events = [forget("a"), forget("a")]
    plan = plan_forgets(events, [(3, 1), (4, 1)], {}, {3, 4}, HOME.__getitem__)
    assert plan.keep == [False, False]
    assert plan.tombstones == {"a": {3, 4}}


def test_a_redelivered_copy_does_not_erase_what_the_user_sent_after_it() -> None:
    # the profile already holds partition 0 up to offset 9: the copy at offset 6 was carried out before
    plan = plan_forgets([forget("a")], [(0, 6)], {"a": {0: 9}}, {0}, HOME.__getitem__)
    assert plan.keep == [False] and plan.tombstones == {}


def test_a_batch_without_forgets_is_left_as_it_is() -> None:
    plan = plan_forgets([view("a"), view("b")], [(0, 1), (1, 1)], {}, {0, 1}, HOME.__getitem__)
    assert plan.keep == [True, True] and plan.tombstones == {} and plan.records == 0


def test_stored_offsets() -> None:
    profile = UserProfile.new("a", 4)
    profile.offsets = {0: 12, 3: 4}
    assert stored_offsets(profile.to_bytes()) == {0: 12, 3: 4}
    assert stored_offsets(None) == {}
    assert stored_offsets(b"not a profile") == {UNKNOWN_PARTITION: -1}


def test_with_repartition_on_the_warning_says_what_the_copy_costs(caplog: pytest.LogCaptureFixture) -> None:
    routes = Routes(PARTITIONS, "events", rekeyed=True)
    with caplog.at_level(logging.WARNING, logger=routing.__name__):
        routes.observe("user-1", (routes.home("user-1") + 1) % PARTITIONS)
    assert routes.misrouted == 1
    [warning] = [r.getMessage() for r in caplog.records]
    assert "re-keys them" in warning and "STREAMREC_REPARTITION=true re-keys" in warning


def test_re_keyed_positions_are_kept_apart_from_events_own() -> None:
    # the profile applied events' partition 0 up to offset 900; re-keying was switched on since: the re-keyed
    # topic's partition 0 starts again at offset 0, recorded under its own key
    key = position_key(0, rekeyed=True)
    assert (key, position_partition(key), position_key(0, rekeyed=False)) == (REKEYED_POSITIONS, 0, 0)
    profile = UserProfile.new("a", 4)
    profile.offsets = {0: 900}
    assert not profile.already_applied(key, 3)  # not skipped as a redelivery
    # a re-keyed copy at offset 5 is no redelivery either, and it erases what was applied from events' own
    # partition 0 (no copy comes there any more): tombstone on changelog partition 0
    plan = plan_forgets([forget("a")], [(key, 5)], {"a": {0: 900}}, {key}, HOME.__getitem__)
    assert plan.keep == [True] and plan.tombstones == {"a": {0}}
    # and once re-keying is off again, what was applied from the re-keyed topic is erased the same way
    plan = plan_forgets([forget("b")], [(2, 7)], {"b": {position_key(2, rekeyed=True): 9}}, {2}, HOME.__getitem__)
    assert plan.keep == [True] and plan.tombstones == {"b": {2}}
