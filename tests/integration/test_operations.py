"""What production does to a worker, on the real local broker with real processes (issue 5, points 3–6).

One broker and one recommender worker process serve the module, in this order: bad input (a hypothesis fuzz),
backpressure (a burst much faster than the worker), privacy (``streamrec forget`` and a worker restart), and
last the broker restart (the broker process is stopped and a new one started on the same port). The item
catalogue is published as ready-made embeddings, so no encoder process is needed.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamrec.io.kafka import key_partition
from streamrec.io.recommendations import latest_recommendation
from streamrec.io.topics import apply_topics, load_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, settings_env, worker_stats
from streamrec.model.events import Event, Item, ItemEmbedding, dumps
from streamrec.model.profiles import UserProfile
from streamrec.settings import Settings
from streamrec.worker.profile_table import changelog_topic
from streamrec.worker.telemetry import parse
from tests.integration.test_pipeline import publish, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

APP_ID = "ops"
N_ITEMS = 200
DIM = 384
MAX_MESSAGE_BYTES = 2048
"""Small on purpose: oversized fuzz messages stay cheap, and the worker enforces the env-configured limit."""
FUZZ_BAD_PER_KIND = 150
"""Hypothesis examples per kind of bad message (14 kinds: 2,100 bad messages)."""
FUZZ_VALID = 1000
FUZZ_RSS_GROWTH_LIMIT = 64 << 20
BURST_EVENTS = 5_000
BURST_USERS = 100
BURST_RSS_GROWTH_LIMIT = 128 << 20
WAIT_S = 180.0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def item_id(n: int) -> str:
    return f"item-{n}"


@dataclass
class Ops:
    workdir: Path
    broker: LocalBroker
    settings: Settings
    worker: Service

    def stats(self) -> dict[str, Any]:
        return wait_for(lambda: run(worker_stats(self.settings)), "worker /stats", [self.worker])

    def metrics(self) -> dict[str, float]:
        url = f"http://{self.settings.web.web_host}:{self.settings.web.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return parse(resp.read().decode())

    def start_worker(self) -> None:
        self.worker = Service("worker", ["worker", "--loglevel", "warning"], self.settings, self.workdir).start()
        wait_for(lambda: (s := run(worker_stats(self.settings))) and s["catalog_ready_at"], "catalogue", [self.worker])

    def worker_log(self) -> str:
        return self.worker.log_path.read_text(errors="replace")


def catalogue() -> list[tuple[str, str, bytes]]:
    rng = np.random.default_rng(5)
    out = []
    for n in range(N_ITEMS):
        v = rng.normal(size=DIM).astype(np.float32)
        emb = ItemEmbedding(Item(item_id(n), f"thing {n}", 1.0, category=f"c{n % 7}"), v / np.linalg.norm(v), "m", "id")
        out.append(("item-embeddings", emb.item.item_id, dumps(emb.to_dict())))
    return out


def warm_up(o: Ops) -> None:
    """A few events of every kind first, so one-off allocations (query encoder, FAISS buffers) are not "growth"."""
    events = [
        Event(f"warm-{n % 5}", t, 10.0 + n, item_id=item_id(n), query="warm query" if t == "search" else None)
        for n, t in enumerate(["view", "click", "add_to_cart", "purchase", "search"] * 10)
    ]
    run(publish(o.settings, [("events", e.user_id, dumps(e.to_dict())) for e in events]))
    wait_for(lambda: (s := run(worker_stats(o.settings))) and s["events"] >= len(events), "warm-up events", [o.worker])


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    workdir: Path = tmp_path_factory.mktemp("ops")
    broker = LocalBroker(log_path=workdir / "broker.log").start()
    settings = Settings.of(
        broker=broker.url,
        app_id=APP_ID,
        web_port=free_port(),
        data_dir=str(workdir / "data"),
        max_message_bytes=MAX_MESSAGE_BYTES,
        snapshot_interval_s=2.0,
    )
    run(apply_topics(settings.kafka))
    run(publish(settings, catalogue()))
    o = Ops(workdir, broker, settings, None)  # type: ignore[arg-type]
    try:
        o.start_worker()
        warm_up(o)
        yield o
    finally:
        code = o.worker.stop() if o.worker is not None else None
        o.broker.stop()  # the broker-restart test replaces the first one
        broker.stop()
        assert code == 0, f"worker exit code {code}\n{o.worker.tail(60)}"


# --- 4. bad input ------------------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
WRONG_TYPED = st.one_of(
    # finite: orjson writes ±inf as null, and null is how an optional field says "absent" (valid)
    INT64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(INT64, max_size=3),
    st.just({"a": 1}),
)
NOT_STR = WRONG_TYPED
NOT_NUMBER = st.one_of(st.text(max_size=5), st.booleans(), st.lists(INT64, max_size=2), st.just({}))
users = st.sampled_from([f"fz-{n}" for n in range(40)] + ["fz-ünï", "fz-\u4e2d\u6587", "fz-emoji-\U0001f600"])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=8))
contexts = st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """Events the contract accepts, including edge cases: any ts in [0, 1e11], unknown items, unicode ids."""
    etype = draw(st.sampled_from(["view", "click", "add_to_cart", "purchase", "view", "click", "search"]))
    ts = draw(st.one_of(st.floats(0, 1e11), st.integers(0, 2_000_000_000), st.sampled_from([0, 1.7e9, 1e11])))
    obj: dict[str, Any] = {"user_id": draw(users), "type": etype, "ts": ts}
    if etype == "search":
        obj["query"] = draw(st.sampled_from(["red shoes", "coffee beans", "a laptop", "ünïcode query ✓"]))
    else:
        obj["item_id"] = draw(st.one_of(st.integers(0, N_ITEMS - 1).map(item_id), st.text(min_size=1, max_size=12)))
    if draw(st.booleans()):
        obj["session_id"] = draw(st.text(max_size=10))
    if draw(st.booleans()):
        obj["context"] = draw(contexts)
    if draw(st.booleans()):
        obj["event_id"] = draw(st.text(min_size=1, max_size=10))
    return obj


def _raw_with_ts(obj: dict[str, Any], literal: str) -> bytes:
    """The event serialised with ``ts`` replaced by a JSON-invalid literal orjson cannot produce (NaN, ...)."""
    raw = dumps({**obj, "ts": 123456789})
    return raw.replace(b"123456789", literal.encode(), 1)


BAD_KINDS = (
    "malformed",
    "truncated",
    "wrong_type",
    "oversized",
    "nan",
    "unknown_type",
    "unknown_key",
    "empty",
    "null",
    "non_utf8",
    "not_object",
    "missing",
    "millis",
    "deep",
)


@st.composite
def bad_messages(draw: st.DrawFn, kind: str) -> tuple[str, bytes | None]:
    """(kind, raw value) — every one violates the events contract by construction."""
    base = draw(valid_events())
    raw = dumps(base)
    if kind == "malformed":
        return kind, draw(st.sampled_from([b"@", b"{'", b"{,", b"}"])) + draw(st.binary(max_size=40))
    if kind == "truncated":
        return kind, raw[: draw(st.integers(1, len(raw) - 1))]
    if kind == "wrong_type":
        field = draw(st.sampled_from(["user_id", "type", "ts", "item_id", "query", "session_id", "context"]))
        value = draw(NOT_NUMBER if field == "ts" else st.one_of(st.text(max_size=3), INT64))
        if field == "context":
            value = draw(st.one_of(INT64, st.booleans(), st.lists(INT64, max_size=3), st.text(max_size=3)))
        elif field in ("user_id", "item_id", "query", "session_id"):
            value = draw(NOT_STR)
        elif field == "type":
            value = draw(WRONG_TYPED)
        return kind, dumps({**base, field: value})
    if kind == "oversized":
        pad = draw(st.integers(MAX_MESSAGE_BYTES, 4 * MAX_MESSAGE_BYTES))
        return kind, dumps({**base, "context": {"pad": "x" * pad}})
    if kind == "nan":
        return kind, _raw_with_ts(base, draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "nan"])))
    if kind == "unknown_type":
        etype = draw(st.text(max_size=12).filter(lambda t: t not in {"view", "click", "add_to_cart", "purchase"}))
        etype = etype if etype not in ("search", "forget_user") else etype + "!"
        return kind, dumps({**base, "type": etype})
    if kind == "unknown_key":
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in base and k not in _EVENT_FIELDS))
        return kind, dumps({**base, key: draw(json_scalars)})
    if kind == "empty":
        return kind, b""
    if kind == "null":
        return kind, None
    if kind == "non_utf8":
        return kind, raw.replace(b'"user_id":"', b'"user_id":"\xff\xfe', 1)
    if kind == "not_object":
        return kind, dumps(draw(st.one_of(st.lists(json_scalars, max_size=3), json_scalars)))  # type: ignore[arg-type]
    if kind == "missing":
        gone = draw(st.sampled_from(["user_id", "type", "ts"] + (["query"] if base["type"] == "search" else [])))
        return kind, dumps({k: v for k, v in base.items() if k != gone})
    if kind == "millis":
        return kind, dumps({**base, "ts": draw(st.floats(1e11, 1e15, exclude_min=True))})
    depth = draw(st.integers(1025, 1500))  # "deep": nesting beyond the JSON parser's limit, under the size limit
    return kind, b'{"user_id":"u","type":"view","ts":1,"item_id":"i","context":' + b"[" * depth + b"]" * depth + b"}"


ITEM_BAD_KINDS = ("truncated", "wrong_dim", "nan_vector", "not_base64", "unknown_source", "missing", "bad_price")
FUZZ_ITEMS_PER_KIND = 15
FUZZ_NEW_ITEMS = 50


@st.composite
def item_embeddings(draw: st.DrawFn, kind: str | None = None) -> bytes:
    """An ``item-embeddings`` value: valid (``kind`` None) or broken in one way the worker must reject."""
    n = draw(st.integers(0, 10**6))
    v = np.random.default_rng(n).normal(size=DIM).astype(np.float32)
    item = Item(f"fz-item-{n}", draw(st.text(max_size=20)), float(draw(st.integers(0, 2_000_000_000))))
    obj = ItemEmbedding(item, v / np.linalg.norm(v), "m", "id").to_dict()
    if kind == "truncated":
        raw = dumps(obj)
        return raw[: draw(st.integers(1, len(raw) - 1))]
    if kind == "wrong_dim":
        w = np.ones(draw(st.integers(1, 64)), np.float32)
        obj |= {"embedding": base64.b64encode(w.tobytes()).decode(), "dim": len(w)}
    elif kind == "nan_vector":
        w = v.copy()
        w[draw(st.integers(0, DIM - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        obj["embedding"] = base64.b64encode(w.tobytes()).decode()
    elif kind == "not_base64":
        obj["embedding"] = draw(st.sampled_from(["%%%", "abc", "not base64!"]))
    elif kind == "unknown_source":
        obj["source"] = draw(st.text(max_size=8).filter(lambda t: t not in ("text", "category", "id")))
    elif kind == "missing":
        obj.pop(draw(st.sampled_from(["embedding", "dim", "model", "source", "item_id", "title", "ts"])))
    elif kind == "bad_price":
        obj["price"] = draw(
            st.one_of(
                st.floats(max_value=-0.01, allow_nan=False, allow_infinity=False), st.text(max_size=3), st.booleans()
            )
        )
    return dumps(obj)


_EVENT_FIELDS = {"event_id", "user_id", "item_id", "type", "ts", "query", "session_id", "context"}


def generate(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` examples of a hypothesis strategy (generation only: the property is checked on the live worker)."""
    out: list[Any] = []

    @hsettings(
        max_examples=n,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out


def dead_letters_for(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [
        d
        for d in (orjson.loads(r.value) for r in run(read_all(settings, "dead-letters")))
        if d["source_topic"] == topic
    ]


def test_fuzzed_bad_input_goes_to_dead_letters_and_never_stops_the_worker(ops: Ops) -> None:
    settings = ops.settings
    from streamrec.model.events import InvalidMessage, parse_event

    bad = [m for kind in BAD_KINDS for m in generate(bad_messages(kind), FUZZ_BAD_PER_KIND)]
    good = generate(valid_events(), FUZZ_VALID)
    bad_items = [raw for kind in ITEM_BAD_KINDS for raw in generate(item_embeddings(kind), FUZZ_ITEMS_PER_KIND)]
    new_items = {orjson.loads(raw)["item_id"]: raw for raw in generate(item_embeddings(), FUZZ_NEW_ITEMS)}
    # the generators' own promise, checked once against the contract's validator
    for _, raw in bad:
        with pytest.raises(InvalidMessage):
            parse_event(raw, MAX_MESSAGE_BYTES)  # type: ignore[arg-type]
    good_raw = [dumps(obj) for obj in good]
    for raw in good_raw:
        parse_event(raw, MAX_MESSAGE_BYTES)
    kinds = collections.Counter(kind for kind, _ in bad)
    assert set(kinds) == set(BAD_KINDS), kinds  # every category of the issue is in the mix

    before = ops.stats()
    pid = ops.worker.process.pid  # type: ignore[union-attr]
    rng = np.random.default_rng(11)
    stream: list[tuple[bytes | None, bytes | None]] = [
        (obj["user_id"].encode(), r) for obj, r in zip(good, good_raw, strict=True)
    ]
    stream += [(None if rng.random() < 0.3 and raw is not None else b"fz-bad", raw) for _, raw in bad]
    n_events = len(stream)
    stream += [(b"fz-item", raw) for raw in bad_items] + [(k.encode(), raw) for k, raw in new_items.items()]
    order = rng.permutation(len(stream))

    async def send_all() -> None:
        from streamrec.io.kafka import make_producer

        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            for i in order:
                key, value = stream[i]
                topic = "events" if i < n_events else "item-embeddings"
                await producer.send(settings.kafka.topic(topic), value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    t0 = time.monotonic()
    run(send_all())
    stats = wait_for(
        lambda: (
            (s := run(worker_stats(settings)))
            and s["events"] + s["duplicates_skipped"] >= before["events"] + len(good)
            and s["dead_letters"] >= before["dead_letters"] + len(bad) + len(bad_items)
            and s["items_indexed"] >= before["items_indexed"] + len(new_items)
            and s
        ),
        "fuzzed messages",
        [ops.worker],
        timeout=WAIT_S,
    )
    drained_s = time.monotonic() - t0
    assert stats["events"] - before["events"] == len(good), "every valid event applied exactly once"
    assert stats["duplicates_skipped"] == before["duplicates_skipped"]
    assert stats["dead_letters"] - before["dead_letters"] == len(bad) + len(bad_items)
    assert stats["items_indexed"] - before["items_indexed"] == len(new_items)

    dead = dead_letters_for(settings, settings.kafka.topic("events"))
    assert len(dead) == len(bad)
    assert all(d["reason"] for d in dead)
    assert collections.Counter(base64.b64decode(d["value_b64"]) for d in dead) == collections.Counter(
        raw or b"" for _, raw in bad
    )
    dead_items = dead_letters_for(settings, settings.kafka.topic("item-embeddings"))
    assert sorted(base64.b64decode(d["value_b64"]) for d in dead_items) == sorted(bad_items)
    assert all(d["reason"] for d in dead_items)
    reasons = collections.Counter(d["reason"].split(":")[0].split(" (")[0][:40] for d in dead)
    assert any(r.startswith("payload of") for r in reasons) and any(r.startswith("malformed JSON") for r in reasons)

    # never restarted, never crashed, memory bounded
    assert ops.worker.alive and ops.worker.process.pid == pid  # type: ignore[union-attr]
    log = ops.worker_log()
    assert "Traceback" not in log and "crashed" not in log.lower(), ops.worker.tail(80)
    growth = stats["rss_bytes"] - before["rss_bytes"]
    assert growth < FUZZ_RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB"
    # the model is still sane after NaN-laden / extreme input
    assert math.isfinite(ops.metrics()["streamrec_model_steps"])
    print(
        f"fuzz: {len(bad)} bad ({dict(kinds)}), {len(good)} valid, {len(bad_items)} bad + {len(new_items)} new "
        f"item embeddings, drained in {drained_s:.1f}s, "
        f"RSS {before['rss_bytes'] / 2**20:.0f} -> {stats['rss_bytes'] / 2**20:.0f} MiB"
    )


# --- 5. backpressure ---------------------------------------------------------------------------------------


def test_backpressure_lag_grows_then_drains_nothing_dropped(ops: Ops) -> None:
    settings = ops.settings
    before = ops.stats()
    rng = np.random.default_rng(3)
    ts0 = 1.7e9
    messages = [
        (
            "events",
            f"bp-{u}",
            dumps(Event(f"bp-{u}", "view", ts0 + n, item_id=item_id(int(rng.integers(N_ITEMS)))).to_dict()),
        )
        for n, u in enumerate(rng.integers(0, BURST_USERS, size=BURST_EVENTS))
    ]
    samples: list[tuple[float, float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with_lag = ops.metrics()
            samples.append(
                (time.monotonic(), with_lag["streamrec_consumer_lag_total"], int(with_lag["streamrec_events_total"]))
            )
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    run(publish(settings, messages))
    published_s = time.monotonic() - t0
    stats = wait_for(
        lambda: (s := run(worker_stats(settings))) and s["events"] >= before["events"] + BURST_EVENTS and s,
        "the burst to drain",
        [ops.worker],
        timeout=WAIT_S,
    )
    wait_for(lambda: ops.metrics()["streamrec_consumer_lag_total"] == 0, "lag 0", [ops.worker], timeout=30)
    drained_s = time.monotonic() - t0
    time.sleep(0.5)
    done.set()
    sampler.join()

    assert stats["events"] - before["events"] == BURST_EVENTS  # nothing dropped, nothing applied twice
    assert stats["duplicates_skipped"] == before["duplicates_skipped"]
    peak = max(lag for _, lag, _ in samples)
    assert peak >= BURST_EVENTS // 4, f"lag never built up (peak {peak}): the producer was not faster"
    assert samples[-1][1] == 0
    growth = stats["rss_bytes"] - before["rss_bytes"]
    assert growth < BURST_RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB"
    assert ops.worker.alive
    print(
        f"backpressure: {BURST_EVENTS} events published in {published_s:.1f}s, drained in {drained_s:.1f}s, "
        f"peak lag {peak:.0f}, RSS +{growth / 2**20:.1f} MiB"
    )


# --- 6. privacy ----------------------------------------------------------------------------------------------


def changelog(settings: Settings) -> dict[bytes, dict[int, list[bytes | None]]]:
    """Every value per key and partition of the profile table's changelog, in order."""
    out: dict[bytes, dict[int, list[bytes | None]]] = {}
    for r in run(read_all(settings, changelog_topic(settings))):
        out.setdefault(r.key, {}).setdefault(r.partition, []).append(r.value)
    return out


def recommendations(settings: Settings) -> dict[bytes, list[bytes | None]]:
    out: dict[bytes, list[bytes | None]] = {}
    for r in run(read_all(settings, "recommendations")):
        out.setdefault(r.key, []).append(r.value)
    return out


def streamrec_cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        env=settings_env(settings) | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_forget_user_deletes_state_publishes_tombstones_and_survives_restart(ops: Ops) -> None:
    settings = ops.settings
    alice, bob = "pv-alice", "pv-bob"
    history = [Event(alice, t, 100.0 + n, item_id=item_id(n)) for n, t in enumerate(["view", "click", "purchase"])]
    history += [Event(bob, "click", 100.0 + n, item_id=item_id(50 + n)) for n in range(3)]
    run(publish(settings, [("events", e.user_id, dumps(e.to_dict())) for e in history]))
    wait_for(
        lambda: run(latest_recommendation(settings.kafka, alice)) and run(latest_recommendation(settings.kafka, bob)),
        "lists for alice and bob",
        [ops.worker],
    )
    before = ops.stats()

    out = streamrec_cli(settings, "forget", alice)
    partitions = load_topics()["events"].partitions
    assert f"forget_user request for '{alice}' published" in out and f"({partitions} partitions)" in out
    # the request is one record per partition: each counts
    stats = wait_for(
        lambda: (
            (s := run(worker_stats(settings))) and s["forgotten_users"] == before["forgotten_users"] + partitions and s
        ),
        "the forget request",
        [ops.worker],
    )
    assert stats["profiles"] == before["profiles"] - 1

    # every changelog partition ends with a tombstone for alice (compaction will erase her profile), not for bob
    log = changelog(settings)
    home = key_partition(alice.encode(), list(range(partitions)))
    assert sorted(log[alice.encode()]) == list(range(partitions))
    assert all(values[-1] is None for values in log[alice.encode()].values())
    assert log[alice.encode()][home][-2] is not None
    assert [values[-1] is not None for values in log[bob.encode()].values()] == [True]
    # recommendations: a tombstone, so compaction drops her lists and readers see "nothing for this user"
    recs = recommendations(settings)
    assert recs[alice.encode()][-1] is None and recs[alice.encode()][0] is not None
    assert run(latest_recommendation(settings.kafka, alice)) is None
    assert run(latest_recommendation(settings.kafka, bob)) is not None
    assert alice not in ops.worker_log()  # the request is logged without the user id

    # restart the worker: it recovers the table from the changelog and must not resurrect alice
    assert ops.worker.stop() == 0
    ops.start_worker()
    run(publish(settings, [("events", bob, dumps(Event(bob, "view", 200.0, item_id=item_id(60)).to_dict()))]))
    recovered = wait_for(
        lambda: (s := run(worker_stats(settings))) and s["events"] >= 1 and s, "recovery", [ops.worker]
    )
    live = {k for k, parts in changelog(settings).items() if any(v[-1] is not None for v in parts.values())}
    assert alice.encode() not in live
    # every live profile recovered (table recovery reads each changelog to its true end), alice's not
    assert recovered["profiles"] == len(live)
    # a new event for alice starts a fresh profile: one event, none of her purchases
    run(publish(settings, [("events", alice, dumps(Event(alice, "view", 300.0, item_id=item_id(7)).to_dict()))]))
    wait_for(lambda: changelog(settings)[alice.encode()][home][-1] is not None, "alice's new profile", [ops.worker])
    fresh = UserProfile.from_bytes(changelog(settings)[alice.encode()][home][-1])  # type: ignore[arg-type]
    assert (fresh.events, fresh.recent, fresh.purchased) == (1, [item_id(7)], [])


# --- 3. broker restart ---------------------------------------------------------------------------------------


def test_worker_reconnects_after_broker_restart(ops: Ops) -> None:
    """The broker process stops and a new one starts on the same port: the worker carries on by itself.

    The local broker keeps everything in memory, so the new one is empty: topics are re-created the way an
    operator would (``streamrec topics apply``), committed offsets and the changelog are gone (README).
    """
    settings = ops.settings
    pid = ops.worker.process.pid  # type: ignore[union-attr]
    before = ops.stats()
    ops.broker.stop()
    time.sleep(3.0)  # the worker sees connection errors meanwhile
    assert ops.worker.alive
    ops.broker = LocalBroker(port=ops.broker.port, log_path=ops.workdir / "broker2.log").start()
    out = streamrec_cli(settings, "topics", "apply")
    assert "created" in out
    run(publish(settings, catalogue()[:5]))
    users = [f"br-{n}" for n in range(5)]
    events = [Event(u, "click", 500.0 + n, item_id=item_id(n)) for n, u in enumerate(users)]
    run(publish(settings, [("events", e.user_id, dumps(e.to_dict())) for e in events]))
    stats = wait_for(
        lambda: (s := run(worker_stats(settings))) and s["events"] >= before["events"] + len(events) and s,
        "events after the broker restart",
        [ops.worker],
        timeout=WAIT_S,
    )
    assert stats["events"] == before["events"] + len(events)
    assert stats["profiles"] == before["profiles"] + len(users)  # the profiles it held in memory are kept
    wait_for(
        lambda: all(run(latest_recommendation(settings.kafka, u)) for u in users),
        "recommendations after the broker restart",
        [ops.worker],
        timeout=WAIT_S,
    )
    assert ops.worker.alive and ops.worker.process.pid == pid  # type: ignore[union-attr]
