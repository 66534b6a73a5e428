"""The worker's side of a changing catalogue: withdrawals through the encoder and the core, refreshed lists (bounded
in rate), business rules from the ``rules`` topic (invalid ones dead-lettered, the rules in force kept)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from streamrec.model.events import Event, Item, ItemEmbedding, ItemWithdrawal, dumps
from streamrec.settings import Settings
from streamrec.worker.core import BytesProfileStore, CoreService
from streamrec.worker.encoder_worker import newest_records, withdrawal_value
from streamrec.worker.stats import WorkerStats
from streamrec.worker.worker import Worker

DIM = 8


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    topic: str = "t"
    partition: int = 0
    offset: int = 0


def item(i: int, ts: float = 1.0) -> bytes:
    return dumps(Item(f"i{i}", f"item {i}", ts, category=f"c{i % 3}").to_dict())


def test_the_encoder_passes_the_newest_withdrawal_on_without_encoding_it() -> None:
    records = [
        Record(b"i1", item(1, ts=5.0)),
        Record(b"i1", dumps(ItemWithdrawal("i1", 6.0).to_dict())),  # newer: withdrawn
        Record(b"i2", dumps(ItemWithdrawal("i2", 6.0).to_dict())),
        Record(b"i2", item(2, ts=7.0)),  # relisted in the same run
        Record(b"i3", item(3, ts=9.0)),
        Record(b"i3", None),  # a tombstone wins over what came before it
        Record(b"i4", item(4, ts=9.0)),
        Record(b"i4", dumps(ItemWithdrawal("i4", 8.0).to_dict())),  # older than the upsert: stale
        Record(b"i5", b'{"item_id": "i5", "available": 0, "ts": 1}'),
    ]
    newest, rejected = newest_records(records, 1 << 16)
    assert newest == {
        "i1": ItemWithdrawal("i1", 6.0),
        "i2": Item("i2", "item 2", 7.0, category="c2"),
        "i3": ItemWithdrawal("i3"),
        "i4": Item("i4", "item 4", 9.0, category="c1"),
    }
    assert [(r.key, reason) for r, reason in rejected] == [(b"i5", "field 'available' must be true or false, got int")]
    assert withdrawal_value(ItemWithdrawal("i3")) is None  # a tombstone stays a tombstone
    assert orjson.loads(withdrawal_value(ItemWithdrawal("i1", 6.0)) or b"") == {
        "item_id": "i1",
        "available": False,
        "ts": 6.0,
    }


def service(**flat: Any) -> CoreService:
    settings = Settings.of(**({"embedding_dim": DIM, "top_k": 5, "seed": 3, "exploration_slots": 0} | flat))
    core = CoreService(settings, "w", with_query_encoder=False, own_process=False)
    rng = np.random.default_rng(0)
    values = [
        dumps(ItemEmbedding(Item(f"i{i}", f"item {i}", 1.0, category=f"c{i % 3}", brand=f"b{i % 2}"),
                            rng.normal(size=DIM).astype(np.float32), "m", "text").to_dict())
        for i in range(20)
    ]  # fmt: skip
    assert core.upsert_items(values, live=False).upserted == 20
    return core


def test_a_withdrawal_names_the_users_whose_last_list_holds_it() -> None:
    core = service()
    table: dict[str, bytes | None] = {}
    for user, seen in (("a", "i0"), ("b", "i1"), ("c", "i2")):
        batch = core.process([Event(user, "click", 10.0, item_id=seen)], [None], {})
        table.update(batch.profiles)
    listed = {u: [i["item_id"] for i in orjson.loads(v)["items"]] for u, v in [*core_lists(core, table)]}
    target = listed["a"][0]
    holders = sorted(u for u, ids in listed.items() if target in ids)
    done = core.upsert_items([None, b"{bad"], live=True, keys=[target.encode(), b"x"])
    assert (done.withdrawn, sorted(done.refresh), [i for i, _ in done.rejected]) == (1, holders, [1])
    again = core.upsert_items([dumps(ItemWithdrawal(target, 20.0).to_dict())], live=True, keys=[target.encode()])
    assert (again.withdrawn, again.refresh) == (0, [])  # withdrawn already: nothing to do
    fresh = dict(core.refresh_lists({u: table[u] for u in holders}))
    assert sorted(fresh) == [u.encode() for u in holders]
    assert all(target not in [i["item_id"] for i in orjson.loads(v)["items"]] for v in fresh.values())
    assert core.recommender.users_listing([target]) == []


def core_lists(core: CoreService, table: dict[str, bytes | None]) -> list[tuple[str, bytes]]:
    return [(k.decode(), v) for k, v in core.refresh_lists(dict(table))]


def test_rules_reach_the_core_as_values_by_name() -> None:
    core = service(top_k=10)
    batch = core.process([Event("a", "click", 10.0, item_id="i0")], [None], {})
    core.set_rules({"no-c1": {"exclude": {"categories": ["c1"]}}, "cap": {"cap": {"per_brand": 2}}})
    [(_, value)] = core.refresh_lists(dict(batch.profiles))
    ids = [i["item_id"] for i in orjson.loads(value)["items"]]
    assert len(ids) == 4 and not [i for i in ids if int(i[1:]) % 3 == 1]  # two brands, two each
    profile = BytesProfileStore(dict(batch.profiles)).get("a")
    assert profile is not None and profile.events == 1


@dataclass
class FakeCore:
    rules: list[dict[str, Any]] = field(default_factory=list)
    lists: dict[str, bytes] = field(default_factory=dict)
    asked: list[list[str]] = field(default_factory=list)

    async def set_rules(self, values: dict[str, Any]) -> None:
        self.rules.append(values)

    async def refresh_lists(self, raw: dict[str, bytes | None]) -> list[tuple[bytes, bytes]]:
        self.asked.append(list(raw))
        return [(u.encode(), self.lists[u]) for u in raw]


@dataclass
class FakeDeadLetters:
    rejected: list[tuple[bytes | None, str]] = field(default_factory=list)

    async def reject(self, topic: str, value: bytes | None, reason: str, *args: Any) -> None:
        self.rejected.append((value, reason))


def fake_worker(**flat: Any) -> Any:
    return SimpleNamespace(
        settings=Settings.of(**flat),
        rules={},
        core=FakeCore(),
        dead_letters=FakeDeadLetters(),
        stats=WorkerStats(),
        rules_ready=asyncio.Event(),
        refresh_pending={},
        published=[],
    )


def test_an_invalid_rule_is_dead_lettered_and_the_rules_in_force_stay() -> None:
    w = fake_worker()
    good = b'{"exclude": {"brands": ["acme"]}}'
    asyncio.run(Worker._apply_rules(w, [Record(b"no-acme", good), Record(b"caps", b'{"cap": {"per_brand": 2}}')]))
    assert w.core.rules == [{"no-acme": {"exclude": {"brands": ["acme"]}}, "caps": {"cap": {"per_brand": 2}}}]
    bad = [Record(b"no-acme", b'{"exclude": {"brands": "acme"}}'), Record(b"x", b"{not json")]
    asyncio.run(Worker._apply_rules(w, bad))
    assert [reason.split(":")[0] for _, reason in w.dead_letters.rejected] == ["invalid rule", "invalid rule"]
    assert "'exclude.brands' must be a list of strings" in w.dead_letters.rejected[0][1]
    assert len(w.core.rules) == 1 and set(w.rules) == {"no-acme", "caps"}  # nothing changed: the core not asked
    asyncio.run(Worker._apply_rules(w, [Record(b"caps", None)]))  # a tombstone deletes the rule
    assert w.core.rules[-1] == {"no-acme": {"exclude": {"brands": ["acme"]}}} and w.stats.rules_in_force == 1


class Store:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data
        self.reads = 0

    def raw_for(self, users: Any) -> dict[str, bytes | None]:
        self.reads += 1
        return {u: self.data.get(u) for u in users}


class Publisher:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def publish(self, messages: Any) -> None:
        self.sent += messages


def test_refreshes_go_oldest_first_at_most_so_many_a_tick_and_never_over_a_newer_list() -> None:
    w = fake_worker()
    w.core.lists = {u: f"list-{u}".encode() for u in "abcde"}
    store = Store({u: f"profile-{u}".encode() for u in "abcd"})  # e moved to a peer: no profile here
    w.publisher = Publisher()
    w.refresh_pending = {u: float(n) for n, u in enumerate("eabcd")}
    assert asyncio.run(Worker.refresh_some(w, store, 2)) == 1  # e skipped, a refreshed
    assert w.core.asked == [["a"]] and list(w.refresh_pending) == ["b", "c", "d"]
    real_refresh = w.core.refresh_lists

    async def meanwhile(raw: dict[str, bytes | None]) -> list[tuple[bytes, bytes]]:
        store.data["c"] = b"profile-c, changed by a batch"  # the batch published a newer list for c
        return await real_refresh(raw)

    w.core.refresh_lists = meanwhile
    assert asyncio.run(Worker.refresh_some(w, store, 2)) == 1
    assert [(m[0], m[2], m[3]) for m in w.publisher.sent] == [
        ("recommendations", b"a", b"list-a"),
        ("recommendations", b"b", b"list-b"),
    ]
    assert (w.stats.lists_refreshed, w.stats.refresh_pending, len(w.stats.refresh_ms)) == (2, 1, 2)
