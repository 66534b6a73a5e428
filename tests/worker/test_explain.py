"""``/explain?user=``: the user's list ranked now from this worker's table, or a 404 that says why not."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.io.kafka import key_partition
from streamrec.model.events import Event, Item, ItemEmbedding, dumps
from streamrec.settings import Settings
from streamrec.worker.app import create_app

DIM = 8


def test_explain_answers_for_users_of_this_workers_partitions_only(tmp_path: Path) -> None:
    settings = Settings.of(data_dir=str(tmp_path), core_process=False, embedding_dim=DIM, top_k=3)
    app, worker = create_app(settings, with_query_encoder=False)
    partitions = app.conf.topic_partitions
    held = key_partition(b"u1", range(partitions))
    worker.assigned_partitions = lambda: [held]  # type: ignore[method-assign]
    elsewhere = next(f"v{n}" for n in range(100) if key_partition(f"v{n}".encode(), range(partitions)) != held)
    rng = np.random.default_rng(0)
    items = [
        dumps(ItemEmbedding(Item(f"i{n}", "", 1.0, category=f"c{n % 2}"), rng.normal(size=DIM), "m", "id").to_dict())
        for n in range(10)
    ]

    async def run() -> list[tuple[int, dict[str, Any]]]:
        await worker.core.upsert_items(items, False)
        batch = await worker.core.process([Event("u1", "click", 2.0, item_id="i4")], [None], {"u1": None})
        table = {b"u1": batch.profiles["u1"]}
        steps = worker.core.state.model_steps
        out = [await worker.explain(user, table) for user in ("u1", elsewhere, "")]
        worker.assigned_partitions = lambda: [held, key_partition(elsewhere.encode(), range(partitions))]  # type: ignore[method-assign]
        out.append(await worker.explain(elsewhere, table))
        assert worker.core.state.model_steps == steps
        return out

    try:
        (ok, body), (not_here, why), (bad, _), (unknown, no_profile) = asyncio.run(run())
    finally:
        worker.core.close()
    assert ok == 200 and body["user_id"] == "u1" and len(body["items"]) == 3
    assert [r["item_id"] for r in body["recent_items"]] == ["i4"]
    assert all(sum(i["contributions"].values()) == pytest.approx(i["score"], abs=1e-5) for i in body["items"])
    assert (not_here, why["error"], why["user_id"]) == (404, "not_here", elsewhere)
    assert "is not held by this worker" in why["message"]
    assert bad == 400
    assert (unknown, no_profile["error"]) == (404, "no_profile")
