"""The profiles table: changelog replay never moves a user state backwards; forget tombstones go out first."""

from __future__ import annotations

from types import SimpleNamespace

import faust

from streamrec.model.events import Event
from streamrec.model.profiles import UserProfile, apply_event
from streamrec.settings import Settings
from streamrec.worker.profile_table import ProfileTable, TableProfileStore, applied_events


def _profile(user: str, n: int) -> bytes:
    s = Settings.of(embedding_dim=2)
    p = UserProfile.new(user, 2)
    for i in range(n):
        apply_event(p, Event(user, "view", float(i), item_id=f"i{i}"), None, None, s.profile, 0, i)
    return p.to_bytes()


def _record(key: bytes, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(value=value, partition=0))


def test_changelog_replay_skips_records_older_than_the_profile_in_memory() -> None:
    app = faust.App("profile-table-test", store="memory://")
    table = ProfileTable(app, name="profiles", beacon=app.tables.beacon, key_type=bytes, value_type=bytes)
    table.data[b"a"] = _profile("a", 5)  # this worker's newest write, not in the changelog yet
    table.apply_changelog_batch(
        [
            _record(b"a", _profile("a", 3)),  # replayed older state: skipped
            _record(b"b", _profile("b", 2)),  # a user only the changelog knows: applied
            _record(b"a", _profile("a", 5)),  # the same state again: applied (no change)
        ]
    )
    assert applied_events(table.data[b"a"]) == 5
    assert applied_events(table.data[b"b"]) == 2
    table.apply_changelog_batch([_record(b"b", _profile("b", 4)), _record(b"a", None)])  # newer; a tombstone
    assert applied_events(table.data[b"b"]) == 4
    table.apply_changelog_batch([_record(b"b", _profile("b", 9)), _record(b"b", _profile("b", 6))])  # out of order
    assert applied_events(table.data[b"b"]) == 9
    assert b"a" not in table.data
    assert applied_events(None) == -1


def test_a_forget_writes_its_tombstones_before_the_batchs_profiles() -> None:
    table = SimpleNamespace(data={b"a": b"old a", b"b": b"old b", b"c": b"old c"})
    store = TableProfileStore(table, "cl")
    records = store.write(
        {"a": b"fresh a", "b": None, "c": b"new c"},
        {"a": 4, "c": 1},  # b had only its forget in the batch: no event, so no partition of its own
        {"a": {4, 0}, "b": {2}},
    )
    assert records == [
        ("cl", 0, b"a", None),
        ("cl", 4, b"a", None),
        ("cl", 2, b"b", None),
        ("cl", 4, b"a", b"fresh a"),  # after the tombstone on its partition: the profile made after the forget
        ("cl", 1, b"c", b"new c"),
    ]
    assert table.data == {b"a": b"fresh a", b"c": b"new c"}
