"""The Faust floor: events/s of the worker's own Faust app when its agent does no recommender work.

The worker's throughput is bounded by its Faust process as much as by its core; this is that bound. A child
process runs the worker's Faust app (:func:`streamrec.worker.app.faust_app`: same settings and patches,
:func:`streamrec.worker.faust_compat.apply` included) and its batching
(:func:`streamrec.worker.batching.natural_batches`) over a pre-filled ``events`` backlog, in its own consumer
group, in one of two phases:

* ``bare`` — decode each event (as the worker does), nothing else;
* ``publish`` — also publish what the worker publishes per batch: for each user of the batch a profile to a
  changelog on the event's partition and a recommendation list keyed by user, both real-sized (a stored
  :class:`~streamrec.model.profiles.UserProfile` and a ``top_k`` list), through the worker's own
  :class:`streamrec.worker.publisher.BatchPublisher`. ``streamrec bench`` reports this one as
  ``faust_floor_events_per_s``.

The floor's outputs go to topics of their own (:data:`FLOOR_TOPICS`, partitioned like their real counterparts),
so a worker watched on the same broker never sees them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.io.kafka import OutMessage
from streamrec.io.topics import apply_topics, load_topics
from streamrec.lab.processes import cpu_seconds, settings_env
from streamrec.model.events import dumps, event_from_dict, loads_message
from streamrec.model.profiles import UserProfile
from streamrec.model.recommender import RankedList, Recommendation
from streamrec.settings import Settings

PHASES = ("bare", "publish")
BROKER_PID_ENV = "STREAMREC_FLOOR_BROKER_PID"
RESULT_ENV = "STREAMREC_FLOOR_RESULT"
USERS_ENV = "STREAMREC_FLOOR_USERS"
FLOOR_TOPICS = {"changelog": ("floor-changelog", "events"), "lists": ("floor-recommendations", "recommendations")}
"""The floor's output topics: (name, the real topic whose partition count it takes)."""
RECENT_ITEMS = 10
"""Recent items in each published profile (what a synthetic-bench profile holds after a few events)."""
CHILD_TIMEOUT_S = 900.0


def outputs(settings: Settings, item_ids: Sequence[str], users: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
    """Each user's (profile, list) message values, real-sized, made before the drain (not timed)."""
    rng = np.random.default_rng(settings.retrieval.seed)
    ids = np.asarray(item_ids)
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


async def create_floor_topics(settings: Settings) -> None:
    """The floor's output topics, partitioned like the worker's changelog and ``recommendations``."""
    specs = load_topics()
    await apply_topics(
        settings.kafka, {name: dataclasses.replace(specs[like], name=name) for name, like in FLOOR_TOPICS.values()}
    )


def run_floor(
    settings: Settings,
    phase: str,
    n_events: int,
    item_ids: Sequence[str],
    users: Sequence[str],
    workdir: Path,
    broker_pid: int | None,
) -> dict[str, Any]:
    """Drain the first ``n_events`` of ``events`` with the worker's Faust app in a child process (own consumer
    group and web port, from ``settings``); returns its figures: events/s, the CPU cores its process and the
    broker used, and the published messages' mean sizes (``publish``)."""
    if phase not in PHASES:
        raise ValueError(f"unknown floor phase {phase!r}: expected one of {PHASES}")
    users_path = workdir / f"floor-{phase}-input.json"
    users_path.write_text(json.dumps({"items": list(item_ids), "users": list(users)}))
    result_path = workdir / f"floor-{phase}.json"
    result_path.unlink(missing_ok=True)
    env = {
        **settings_env(settings),
        BROKER_PID_ENV: str(broker_pid or 0),
        RESULT_ENV: str(result_path),
        USERS_ENV: str(users_path),
    }
    command = [sys.executable, "-m", "streamrec.lab.floor", "--child", phase, "--events", str(n_events)]
    with open(workdir / f"floor-{phase}.log", "wb") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT_S)
    if not result_path.exists():
        tail = (workdir / f"floor-{phase}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the Faust floor ({phase}) gave no result (exit {done.returncode}):\n{tail}")
    return dict(json.loads(result_path.read_text()))


def child(phase: str, n_events: int) -> None:
    """Run the Faust app until ``n_events`` are drained, write the phase's figures to the result file, stop."""
    import faust

    from streamrec.worker.app import faust_app
    from streamrec.worker.batching import natural_batches
    from streamrec.worker.publisher import BatchPublisher

    settings = Settings.from_env()
    messages: dict[str, tuple[bytes, bytes]] = {}
    if phase == "publish":
        given = json.loads(Path(os.environ[USERS_ENV]).read_text())
        messages = outputs(settings, given["items"], given["users"])
    partitions = load_topics()["events"].partitions
    app = faust_app(settings, partitions)
    events_topic = app.topic(settings.kafka.topic("events"), key_serializer="raw", value_serializer="raw")
    changelog = settings.kafka.topic(FLOOR_TOPICS["changelog"][0])
    lists = settings.kafka.topic(FLOOR_TOPICS["lists"][0])
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
                out += [(lists, None, u.encode(), messages[u][1]) for u in users]
                await publisher.publish(out)
            state["events"] += len(batch)
            state["batches"] += 1
            if state["events"] >= n_events:
                await publisher.delivered()
                wall = time.perf_counter() - state["t0"]
                broker = cpu_seconds(broker_pid)
                line = {
                    "phase": phase,
                    "events": state["events"],
                    "batches": state["batches"],
                    "events_per_s": state["events"] / wall,
                    "seconds": wall,
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=PHASES, required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    child(args.child, args.events)


if __name__ == "__main__":
    main()
