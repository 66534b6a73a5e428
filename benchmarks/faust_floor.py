"""Events/s of the worker's Faust app when its agent does no recommender work: what the framework alone costs.

The worker's throughput is bounded by its Faust process as much as by its core. This drains a pre-filled
``events`` backlog with the worker's own Faust app (:func:`streamrec.worker.app.faust_app`: same settings and
patches) and its batching (:func:`streamrec.worker.batching.natural_batches`), in two phases, each a fresh process
and consumer group on the local broker:

* ``bare`` — decode each event (as the worker does), nothing else;
* ``publish`` — also publish what the worker publishes per batch: for each user of the batch a profile to
  a changelog on the event's partition and a recommendation list keyed by user, both real-sized (a stored
  :class:`~streamrec.model.profiles.UserProfile` and a ``top_k`` list), through the worker's own
  :class:`streamrec.worker.publisher.BatchPublisher`.

Prints one JSON object: events/s and the CPU cores the Faust process and the broker used meanwhile::

    .venv/bin/python benchmarks/faust_floor.py --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import numpy as np

from streamrec.io.kafka import OutMessage, client_kwargs, make_producer
from streamrec.io.topics import apply_topics, load_topics
from streamrec.lab.bench import event_messages, machine, send_all
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import cpu_seconds, settings_env
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.model.events import Event, dumps, event_from_dict, loads_message
from streamrec.model.profiles import UserProfile
from streamrec.model.recommender import RankedList, Recommendation
from streamrec.settings import Settings
from streamrec.worker.app import faust_app
from streamrec.worker.batching import natural_batches
from streamrec.worker.publisher import BatchPublisher

PHASES = ("bare", "publish")
BROKER_PID_ENV = "STREAMREC_FLOOR_BROKER_PID"
RESULT_ENV = "STREAMREC_FLOOR_RESULT"
CHANGELOG = "floor-changelog"
RECENT_ITEMS = 10
"""Recent items in each published profile (what a synthetic-bench profile holds after a few events)."""
CHILD_TIMEOUT_S = 600.0
SHOP_ITEMS = 50_000
SHOP_USERS = 20_000
"""The bench's synthetic shop (``streamrec bench``): the same skew of users and items."""


def outputs(settings: Settings, shop_items: Sequence[str], users: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
    """Each user's (profile, list) message values, real-sized, made before the drain (not timed)."""
    rng = np.random.default_rng(settings.retrieval.seed)
    ids = np.asarray(shop_items)
    dim, k = settings.retrieval.embedding_dim, settings.retrieval.top_k
    out: dict[str, tuple[bytes, bytes]] = {}
    for user in users:
        profile = UserProfile.new(user, dim)
        profile.long_term = rng.standard_normal(dim).astype(np.float32)
        profile.intent = rng.standard_normal(dim).astype(np.float32)
        profile.recent = ids[rng.integers(0, len(ids), RECENT_ITEMS)].tolist()
        ranked = RankedList(ids[rng.integers(0, len(ids), k)].tolist(), rng.random(k).tolist(), [("similar",)] * k)
        out[user] = (profile.to_bytes(), dumps(Recommendation(user, ranked, "floor", 0.0, 0.0).to_dict()))
    return out


def backlog(settings: Settings, n_events: int) -> tuple[list[str], list[Event]]:
    """The synthetic catalogue's item ids and the backlog's events (the same in every process: fixed seed)."""
    shop = make_shop(SHOP_ITEMS, SHOP_USERS, seed=settings.retrieval.seed)
    return [i.item_id for i in shop.items], make_events(shop, n_events, seed=settings.retrieval.seed)


def child(phase: str, n_events: int) -> None:
    """Run the Faust app until ``n_events`` are drained, write the phase's figures to the result file, stop."""
    settings = Settings.from_env()
    messages: dict[str, tuple[bytes, bytes]] = {}
    if phase == "publish":
        items, events = backlog(settings, n_events)
        messages = outputs(settings, items, sorted({e.user_id for e in events}))
    partitions = load_topics()["events"].partitions
    app = faust_app(settings, partitions)
    events_topic = app.topic(settings.kafka.topic("events"), key_serializer="raw", value_serializer="raw")
    recommendations = settings.kafka.topic("recommendations")
    changelog = settings.kafka.topic(CHANGELOG)
    broker_pid = int(os.environ[BROKER_PID_ENV])
    publisher = BatchPublisher(app)
    state: dict[str, Any] = {"events": 0, "batches": 0}

    @app.agent(events_topic, name="events")
    async def on_events(stream: Any) -> None:
        async for batch in natural_batches(stream, settings.batching.batch_size):
            if not state["batches"]:
                state.update(t0=time.perf_counter(), cpu0=time.process_time(), broker0=cpu_seconds(broker_pid))
            users: dict[str, int] = {}
            for fevent in batch:
                users[event_from_dict(loads_message(fevent.value, settings.kafka.max_message_bytes)).user_id] = (
                    fevent.message.partition
                )
            if phase == "publish":
                out: list[OutMessage] = [(changelog, p, u.encode(), messages[u][0]) for u, p in users.items()]
                out += [(recommendations, None, u.encode(), messages[u][1]) for u in users]
                await publisher.publish(out)
            state["events"] += len(batch)
            state["batches"] += 1
            if state["events"] >= n_events:
                await publisher.delivered()
                wall = time.perf_counter() - state["t0"]
                broker = cpu_seconds(broker_pid)
                line = {
                    "events": state["events"],
                    "batches": state["batches"],
                    "events_per_s": state["events"] / wall,
                    "faust_process_cores": (time.process_time() - state["cpu0"]) / wall,
                    "broker_cores": None if broker is None else (broker - state["broker0"]) / wall,
                }
                if messages:
                    line["profile_bytes"] = float(np.mean([len(p) for p, _ in messages.values()]))
                    line["list_bytes"] = float(np.mean([len(r) for _, r in messages.values()]))
                Path(os.environ[RESULT_ENV]).write_text(json.dumps(line))  # Faust takes over stdout
                os.kill(os.getpid(), signal.SIGTERM)  # Faust's worker stops cleanly on SIGTERM

    worker = faust.Worker(app, loglevel="warning")
    worker.spinner = None
    worker.execute_from_commandline()


async def prefill(settings: Settings, n_events: int) -> float:
    """Create the topics and publish the synthetic backlog; returns events/s."""
    await apply_topics(settings.kafka)
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka))
    await admin.start()
    try:
        partitions = load_topics()["events"].partitions
        await admin.create_topics(
            [NewTopic(settings.kafka.topic(CHANGELOG), partitions, settings.kafka.replication_factor)]
        )
    finally:
        await admin.close()
    _, events = backlog(settings, n_events)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        return await send_all(producer, settings.kafka.topic("events"), event_messages(events))
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.events)
        return
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-floor-"))
    result: dict[str, Any] = {"machine": machine(), "events": args.events}
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings.from_env().replace(broker=broker.url, data_dir=str(workdir / "data"))
        result["produce_events_per_s"] = asyncio.run(prefill(settings, args.events))
        for phase in PHASES:
            phase_settings = settings.replace(app_id=f"streamrec-floor-{phase}", web_port=free_port())
            result_path = workdir / f"{phase}.json"
            env = {
                **settings_env(phase_settings),
                BROKER_PID_ENV: str(broker.process.pid),
                RESULT_ENV: str(result_path),
            }
            command = [sys.executable, __file__, "--child", phase, "--events", str(args.events)]
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
            )
            if not result_path.exists():
                raise SystemExit(f"phase {phase} gave no result (exit {done.returncode}):\n{done.stderr[-3000:]}")
            result[phase] = json.loads(result_path.read_text())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
