"""The worker's core behind :class:`CoreClient`: the same results in a child process as in a thread."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import numpy as np
import orjson
import pytest

from streamrec.model.events import Event, Item, ItemEmbedding, dumps
from streamrec.model.profiles import UserProfile
from streamrec.model.ranker import FEATURES
from streamrec.model.shared_model import snapshot_key
from streamrec.settings import Settings
from streamrec.worker import core as core_module
from streamrec.worker.core import CoreBatch, CoreClient, CoreError, CoreService

DIM = 8


def item_values() -> list[bytes | None]:
    rng = np.random.default_rng(0)
    values: list[bytes | None] = []
    for i in range(40):
        item = Item(f"i{i}", f"item {i}", ts=100.0 + i, category=f"c{i % 4}", price=5.0 + i)
        values.append(dumps(ItemEmbedding(item, rng.normal(size=DIM).astype(np.float32), "m", "text").to_dict()))
    values.append(b"{not json")  # a bad record: rejected with its index, the rest applied
    values.append(dumps(ItemEmbedding(Item("wide", "w", ts=1.0), np.ones(DIM + 1, np.float32), "m", "text").to_dict()))
    return values


def drive(core_process: bool, warm_up: int = 0) -> tuple[Any, ...]:
    """Load a catalogue, run two batches (the second reads the profiles the first wrote) and a forget."""
    settings = Settings.of(embedding_dim=DIM, top_k=5, seed=3, core_process=core_process)
    client = CoreClient(settings, "w1", with_query_encoder=False)

    async def run() -> tuple[Any, ...]:
        loaded = await client.upsert_items(item_values(), False)
        await client.warm_up(warm_up)
        table: dict[str, bytes] = {}
        batches: list[CoreBatch] = []
        for n, events in enumerate(
            [
                [Event("u1", "view", 200.0, item_id="i1"), Event("u2", "click", 201.0, item_id="i2")],
                [Event("u1", "purchase", 202.0, item_id="i5"), Event("u2", "forget_user", 203.0)],
            ]
        ):
            raw = {e.user_id: table.get(e.user_id) for e in events}
            positions = [(0, 10 * n + i) for i in range(len(events))]
            batch = await client.process(events, positions, raw)
            for user, value in batch.profiles.items():
                if value is None:
                    table.pop(user, None)
                else:
                    table[user] = value
            batches.append(batch)
        with pytest.raises(CoreError, match="features"):  # a failure in the core comes back as a CoreError
            await client.restore_model({snapshot_key("w1"): {"contribution": {}, "features": ["not", "ours"]}})
        return loaded, batches, table, client.state

    try:
        return asyncio.run(run())
    finally:
        client.close()


def test_the_core_gives_the_same_results_in_its_own_process_as_in_a_thread() -> None:
    in_thread, in_child = drive(False), drive(True)
    loaded, batches, table, state = in_child
    assert loaded.upserted == 40 and [i for i, _ in loaded.rejected] == [40, 41]
    assert "9 dimensions" in loaded.rejected[1][1]
    first, second = batches
    assert (first.applied, first.duplicates, [k for k, _ in first.recommendations]) == (2, 0, [b"u1", b"u2"])
    assert (second.applied, second.forgotten, [k for k, _ in second.recommendations]) == (1, ["u2"], [b"u1"])
    assert second.profiles["u2"] is None and set(table) == {"u1"}
    u1 = UserProfile.from_bytes(table["u1"])
    assert (u1.events, u1.recent, u1.purchased, u1.offsets) == (2, ["i1", "i5"], ["i5"], {0: 10})
    listed = [i["item_id"] for i in orjson.loads(second.recommendations[0][1])["items"]]
    assert len(listed) == 5 and not {"i1", "i5"} & set(listed)  # seen and purchased items are left out
    assert state.items_indexed == 40 and state.rss_bytes > 0
    # the replies carry the ranker's weights and the online-quality counts: u1's purchase was scored against u1's
    # first list (u2's forget request is no item event)
    assert list(state.ranker_weights) == list(FEATURES)
    assert sum(state.online.scored().values()) == 1 and state.online.k == 5
    # the thread runs the very same service: identical lists (bar the publish time), profiles and state
    t_loaded, t_batches, t_table, t_state = in_thread
    assert (t_loaded, t_table) == (loaded, table)
    assert t_state.rss_bytes == 0 and t_state.model_steps == state.model_steps
    assert t_state.ranker_weights == state.ranker_weights and t_state.online == state.online

    def lists(bs: list[CoreBatch]) -> list[Any]:
        return [[(k, orjson.loads(v)["items"]) for k, v in b.recommendations] for b in bs]

    assert lists(t_batches) == lists(batches)


def test_warming_the_core_up_changes_no_result() -> None:
    """The start-up ranking for made-up users learns, remembers and stores nothing."""
    cold, warm = drive(True), drive(True, warm_up=50)
    assert warm[2] == cold[2]  # profiles to the byte
    assert warm[3].model_steps == cold[3].model_steps and warm[3].model_version == cold[3].model_version

    def lists(bs: list[CoreBatch]) -> list[Any]:
        return [[(k, orjson.loads(v)["items"]) for k, v in b.recommendations] for b in bs]

    assert lists(warm[1]) == lists(cold[1])


def test_a_dead_core_process_fails_every_call_at_once_and_says_it_is_gone() -> None:
    gone: list[bool] = []
    client = CoreClient(
        Settings.of(embedding_dim=DIM, core_process=True),
        "w1",
        with_query_encoder=False,
        on_gone=lambda: gone.append(True),
    )

    async def run() -> None:
        await client.trim()
        with pytest.raises(CoreError, match="features"):  # a failed call on a live core: not gone
            await client.restore_model({snapshot_key("w1"): {"contribution": {}, "features": ["x"]}})
        assert client.alive and client.pid is not None and gone == []
        os.kill(client.pid, signal.SIGKILL)
        for _ in range(2):
            with pytest.raises(CoreError, match="exited"):
                await client.trim()
        assert not client.alive
        assert gone == [True, True]  # the worker's hook (it stops the worker) runs on every failed call

    try:
        asyncio.run(run())
    finally:
        client.close()


def test_explaining_a_stored_profile_through_the_client() -> None:
    # no exploration slot: its pick is a random draw, which an explanation does not replay
    settings = Settings.of(embedding_dim=DIM, top_k=5, seed=3, core_process=False, exploration_slots=0)
    client = CoreClient(settings, "w1", with_query_encoder=False)

    async def run() -> tuple[dict[str, Any], CoreBatch, int]:
        await client.upsert_items(item_values(), False)
        events = [Event("u1", "view", 200.0, item_id="i1"), Event("u1", "purchase", 201.0, item_id="i6")]
        batch = await client.process(events, [None, None], {"u1": None})
        steps = client.state.model_steps
        explained = await client.explain(batch.profiles["u1"])
        return explained, batch, steps

    try:
        explained, batch, steps = asyncio.run(run())
    finally:
        client.close()
    published = [i["item_id"] for i in orjson.loads(batch.recommendations[0][1])["items"]]
    assert explained["user_id"] == "u1" and [i["item_id"] for i in explained["items"]] == published
    assert [r["item_id"] for r in explained["recent_items"]] == ["i6", "i1"]
    assert [r["purchased"] for r in explained["recent_items"]] == [True, False]
    assert [c["category"] for c in explained["top_categories"]] == ["c2", "c1"]  # a purchase outweighs a view
    assert client.state.model_steps == steps


@pytest.mark.parametrize(
    ("every", "own_process", "expected"),
    [
        # frozen at start-up (collected first), then whenever 3 or more events were processed since the last freeze
        (3, True, ["collect", "freeze", "batch 2", "batch 2", "freeze", "batch 1", "batch 1", "batch 1", "freeze"]),
        # in the worker's own process (a thread) only the start-up freeze: Faust's objects make cycles
        (3, False, ["collect", "freeze", "batch 2", "batch 2", "batch 1", "batch 1", "batch 1"]),
        (0, True, ["batch 2", "batch 2", "batch 1", "batch 1", "batch 1"]),  # 0: never
    ],
)
def test_the_core_freezes_its_heap_at_start_up_and_every_gc_freeze_events(
    monkeypatch: pytest.MonkeyPatch, every: int, own_process: bool, expected: list[str]
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(core_module.gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(core_module.gc, "freeze", lambda: calls.append("freeze"))
    settings = Settings.of(embedding_dim=DIM, top_k=5, seed=3, gc_freeze_events=every)
    service = CoreService(settings, "w1", with_query_encoder=False, own_process=own_process)
    service.upsert_items(item_values(), False)
    service.freeze_heap(collect=True)
    table: dict[str, bytes | None] = {}
    for n, size in enumerate([2, 2, 1, 1, 1]):
        events = [Event(f"u{n}-{i}", "view", 200.0 + n, item_id=f"i{i}") for i in range(size)]
        calls.append(f"batch {size}")
        result = service.process(events, [None] * size, {e.user_id: None for e in events})
        table.update(result.profiles)
    assert calls == expected
    assert len(table) == 7  # every batch applied
