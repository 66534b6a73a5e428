"""A shop's catalogue on the real local broker: withdrawn and relisted items, business rules, per-user hides.

One broker, one encoder (withdrawals and relistings go through ``items``, as a shop publishes them) and one worker
for the module; the catalogue itself is published as ready-made embeddings. In order: a withdrawal (gone from new
lists within 2 s, from every holder's last list within 10 s), the relisting, then rules and hides, a malformed rule,
and a worker restart that keeps both.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, settings_env, worker_stats
from streamrec.model.events import Event, Item, ItemEmbedding, dumps
from streamrec.settings import Settings
from tests.integration.test_operations import item_id
from tests.integration.test_pipeline import publish, read_all, run, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

N_ITEMS = 22
"""top_k + 2: a user who touched two items is offered every other available item."""
DIM = 384
NEW_LISTS_S = 2.0
LAST_LIST_S = 10.0
RULES_S = 2.0


def category(n: int) -> str:
    return f"c{n % 4}"


@dataclass
class Shop:
    workdir: Path
    settings: Settings
    encoder: Service
    worker: Service
    target: str = ""
    """The item the withdrawal test withdrew (the relisting test brings it back)."""

    @property
    def services(self) -> list[Service]:
        return [self.encoder, self.worker]

    def start_worker(self) -> None:
        self.worker = Service("worker", ["worker", "--loglevel", "warning"], self.settings, self.workdir).start()
        wait_for(lambda: (s := run(worker_stats(self.settings))) and s["model_ready"], "worker", [self.worker])

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "streamrec", *args],
            env=settings_env(self.settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout + out.stderr

    def lists(self) -> list[tuple[float, dict[str, Any]]]:
        """Every list published so far, with its broker timestamp (s), in publication order per user."""
        return [
            (r.timestamp / 1000.0, orjson.loads(r.value))
            for r in run(read_all(self.settings, "recommendations"))
            if r.value is not None
        ]

    def latest(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for _, rec in self.lists():
            out[rec["user_id"]] = [i["item_id"] for i in rec["items"]]
        return out

    def events(self, events: list[Event]) -> None:
        run(publish(self.settings, [("events", e.user_id, dumps(e.to_dict())) for e in events]))

    def lists_for(self, users: set[str], since: float) -> dict[str, list[str]]:
        """Each user's newest list generated after ``since``, once every one of them has one."""

        def fresh() -> dict[str, list[str]] | None:
            found = {
                rec["user_id"]: [i["item_id"] for i in rec["items"]]
                for _, rec in self.lists()
                if rec["user_id"] in users and rec["generated_at"] > since
            }
            return found if found.keys() == users else None

        return wait_for(fresh, f"lists for {sorted(users)}", self.services)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    workdir: Path = tmp_path_factory.mktemp("shop")
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings.of(
            broker=broker.url,
            app_id="shop",
            web_port=free_port(),
            data_dir=str(workdir / "data"),
            snapshot_interval_s=1.0,
        )
        run(apply_topics(settings.kafka))
        rng = np.random.default_rng(21)
        catalogue = []
        for n in range(N_ITEMS):
            v = rng.normal(size=DIM).astype(np.float32)
            item = Item(item_id(n), f"thing {n}", 1.0, category=category(n), brand=f"brand{n % 3}")
            catalogue.append(
                (
                    "item-embeddings",
                    item.item_id,
                    dumps(ItemEmbedding(item, v / np.linalg.norm(v), "m", "id").to_dict()),
                )
            )
        run(publish(settings, catalogue))
        s = Shop(workdir, settings, Service("encoder", ["encoder"], settings, workdir).start(), None)  # type: ignore[arg-type]
        try:
            s.start_worker()
            wait_for(lambda: "encoder ready" in s.encoder.tail(200), "the encoder", s.services)
            yield s
        finally:
            codes = {svc.name: svc.stop() for svc in s.services if svc is not None}
            assert codes == {"encoder": 0, "worker": 0}, codes


def test_a_withdrawn_item_leaves_new_lists_in_2s_and_every_last_list_in_10s(shop: Shop) -> None:
    users = {f"u{n}" for n in range(8)}
    shop.events([Event(u, "click", 10.0, item_id=item_id(n)) for n, u in enumerate(sorted(users))])
    before = shop.lists_for(users, 0.0)
    counts: dict[str, int] = {}
    for ids in before.values():
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    target = max(sorted(counts), key=counts.__getitem__)
    holders = {u for u, ids in before.items() if target in ids}
    assert len(holders) >= 4
    t0 = time.time()
    run(publish(shop.settings, [("items", target, orjson.dumps({"item_id": target, "available": False, "ts": t0}))]))
    # meanwhile other users keep the worker busy: their lists are "new lists"
    for step in range(10):
        shop.events([Event(f"w{step}-{n}", "view", 20.0 + step, item_id=item_id(n)) for n in range(4)])
        time.sleep(0.4)
    late = [
        (ts, rec) for ts, rec in shop.lists() if rec["generated_at"] >= t0 + NEW_LISTS_S and rec["user_id"][0] == "w"
    ]
    assert len(late) >= 8  # lists were published after the 2 s, by the events, not only refreshes
    assert [rec["user_id"] for _, rec in late if target in {i["item_id"] for i in rec["items"]}] == []
    # every user whose last list held it has a fresh one without it, received within 10 s
    refreshed = shop.lists_for(holders, t0)
    assert [u for u, ids in refreshed.items() if target in ids] == []
    first_fresh = {
        rec["user_id"]: ts
        for ts, rec in reversed(shop.lists())
        if rec["user_id"] in holders and rec["generated_at"] > t0
    }
    assert max(first_fresh.values()) - t0 < LAST_LIST_S, {u: round(t - t0, 2) for u, t in first_fresh.items()}
    stats = run(worker_stats(shop.settings))
    assert stats["items_withdrawn"] == 1 and stats["lists_refreshed"] >= len(holders)
    shop.target = target


def test_a_relisted_item_returns(shop: Shop) -> None:
    target = shop.target
    assert target, "runs after the withdrawal test"
    n = int(target.split("-")[1])
    relisted = Item(target, f"thing {n}", time.time(), category=category(n), brand=f"brand{n % 3}")
    run(publish(shop.settings, [("items", target, dumps(relisted.to_dict() | {"available": True}))]))  # re-encoded
    wait_for(lambda: run(worker_stats(shop.settings))["items_indexed"] == N_ITEMS, "the relisted item", shop.services)
    others = [item_id(k) for k in range(N_ITEMS) if item_id(k) != target][:2]
    since = time.time()
    shop.events([Event("back", "click", 30.0, item_id=others[0]), Event("back", "click", 31.0, item_id=others[1])])
    [ids] = shop.lists_for({"back"}, since).values()
    assert target in ids and len(ids) == N_ITEMS - 2


def test_rules_and_hides_hold_a_malformed_rule_is_dead_lettered_and_both_survive_a_restart(shop: Shop) -> None:
    out = shop.cli("rules", "set", "no-c1", "--exclude-category", "c1", "--description", "c1 is out of season")
    assert "rule 'no-c1' set" in out
    set_at = time.time()
    bad = [("rules", "bad-shape", b'{"exclude": {"categories": "c2"}}'), ("rules", "not-json", b"{nope")]
    run(publish(shop.settings, bad))
    # a user hides one item and a whole category; another user is only subject to the rules
    shop.events(
        [
            Event("h", "click", 40.0, item_id=item_id(0)),
            Event("h", "hide", 41.0, item_id=item_id(2)),
            Event("h", "hide", 42.0, context={"category": "c3"}),
        ]
    )
    time.sleep(max(0.0, set_at + RULES_S - time.time()))
    since = time.time()
    shop.events([Event("h", "view", 43.0, item_id=item_id(4)), Event("g", "view", 43.0, item_id=item_id(4))])
    lists = shop.lists_for({"h", "g"}, since)

    def honoured(lists: dict[str, list[str]]) -> None:
        for user, ids in lists.items():
            assert ids and not [i for i in ids if category(int(i.split("-")[1])) == "c1"], (user, ids)
        assert item_id(2) not in lists["h"]
        assert not [i for i in lists["h"] if category(int(i.split("-")[1])) == "c3"]
        assert [i for i in lists["g"] if category(int(i.split("-")[1])) == "c3"]  # hides are per user

    honoured(lists)
    letters = [orjson.loads(r.value) for r in run(read_all(shop.settings, "dead-letters"))]
    reasons = {r["reason"] for r in letters if r["source_topic"] == shop.settings.kafka.topic("rules")}
    assert any(r.startswith("invalid rule: 'exclude.categories' must be a list") for r in reasons), reasons
    assert any(r.startswith("invalid rule: malformed JSON") for r in reasons), reasons
    listed = shop.cli("rules", "list")
    assert "no-c1" in listed and "bad-shape" in listed and "newest value invalid" in listed
    assert run(worker_stats(shop.settings))["rules_in_force"] == 1

    shop.worker.stop()
    shop.start_worker()
    since = time.time()
    shop.events([Event("h", "view", 50.0, item_id=item_id(5)), Event("g", "view", 50.0, item_id=item_id(5))])
    honoured(shop.lists_for({"h", "g"}, since))

    assert "cleared 1 rule(s): no-c1" in shop.cli("rules", "clear", "no-c1")
    time.sleep(RULES_S)
    since = time.time()
    shop.events([Event("g", "view", 60.0, item_id=item_id(6))])
    [ids] = shop.lists_for({"g"}, since).values()
    assert [i for i in ids if category(int(i.split("-")[1])) == "c1"]  # the rule is gone
