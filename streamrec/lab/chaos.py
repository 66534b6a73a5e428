"""``streamrec chaos``: a worker crash and a scale-out takeover on the real local broker, checked per user.

One run, all real processes: a local broker, the encoder and two recommender workers in one consumer group.
The Taobao log is replayed at a steady rate; part-way through, one worker is killed with SIGKILL (no
shutdown, no commit, no flush). The survivor must take over the dead worker's partitions and those users'
state from the table's changelog; the dead worker is then restarted and the group rebalances again. When the
replay has drained, the profiles table (its changelog, read to the end, last value per user) is compared
with the log, user by user: every user's applied-event count must equal the number of that user's events
in the log — nothing lost, nothing applied twice, although Kafka redelivers whatever was not committed.

The report (``--json``) holds ``events_in`` (valid events published), ``events_applied`` (sum of per-user
counts in the table), ``lost`` / ``duplicates_applied`` (per-user shortfall / excess, summed),
``dead_letters``, ``recovery_s`` (kill → the survivor holds every partition and has published
recommendations from the dead worker's partitions) and ``workers``, plus what the checks rest on
(``takeover_s``: kill → the survivor holds every partition, the group's part of the recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamrec.io.kafka import make_producer, read_to_end
from streamrec.io.logs import Record, ReplayStats, publish, read_log
from streamrec.io.recommendations import RecommendationWatcher
from streamrec.io.topics import apply_topics, load_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, wait_for_services, worker_stats
from streamrec.model.events import dumps
from streamrec.model.profiles import UserProfile
from streamrec.model.shared_model import snapshot_key
from streamrec.settings import Settings
from streamrec.worker.profile_table import changelog_topic

REPORT_KEYS = ("events_in", "events_applied", "lost", "duplicates_applied", "dead_letters", "recovery_s", "workers")
"""The figures the issue asks for (the report holds more)."""
SEND_CHUNK = 200
"""Events sent between pacing sleeps."""


@dataclass(frozen=True)
class ChaosOptions:
    dataset: Path
    limit: int | None = 12_000
    """Rows of the Taobao log (None: all of it)."""
    replay_s: float = 75.0
    """The events are published at a steady rate over this long, so that the crash, the takeover and the
    restart (a worker takes 20–40 s to start on a small machine) all land mid-replay."""
    kill_at: float = 0.3
    """Share of the events published when the victim is killed."""
    restart_delay_s: float = 2.0
    """How long after the takeover the killed worker is started again."""
    snapshot_interval_s: float = 1.0
    """Model sync cadence of the workers in this run (short, so the victim has published a snapshot)."""
    startup_timeout_s: float = 300.0
    takeover_timeout_s: float = 120.0
    drain_timeout_s: float = 600.0
    loglevel: str = "warning"
    """The workers' log level (their logs are in the work folder)."""


async def applied_counts(settings: Settings) -> dict[str, int]:
    """Per user, the applied-event count in the newest profile on the changelog (read to its true end)."""
    latest: dict[bytes, bytes | None] = {}

    def keep(record: Any) -> None:
        latest[record.key] = record.value

    await read_to_end(settings.kafka, changelog_topic(settings), keep)
    return {key.decode(): UserProfile.from_bytes(raw).events for key, raw in latest.items() if raw is not None}


def compare(expected: Counter[str], applied: dict[str, int]) -> tuple[int, int, int]:
    """(lost, duplicates_applied, users off) from per-user counts in the log vs. in the table.

    >>> compare(Counter({"a": 2, "b": 1}), {"a": 3, "c": 1})
    (1, 2, 3)
    """
    lost = dupes = off = 0
    for user in expected.keys() | applied.keys():
        diff = applied.get(user, 0) - expected.get(user, 0)
        lost += max(0, -diff)
        dupes += max(0, diff)
        off += diff != 0
    return lost, dupes, off


async def _count(settings: Settings, topic: str) -> int:
    return await read_to_end(settings.kafka, settings.kafka.topic(topic), lambda _: None)


async def _latest_snapshot(settings: Settings, worker_id: str) -> dict[str, Any] | None:
    latest: dict[str, Any] = {}

    def keep(record: Any) -> None:
        if record.key == snapshot_key(worker_id) and record.value is not None:
            latest["snap"] = orjson.loads(record.value)

    await read_to_end(settings.kafka, settings.kafka.topic("model-snapshots"), keep)
    return latest.get("snap")


class PacedReplay:
    """Publishes events at a steady rate in the background, counting what the broker acknowledged."""

    def __init__(self, settings: Settings, events: Sequence[Record], seconds: float) -> None:
        self.settings = settings
        self.events = events
        self.rate = len(events) / max(seconds, 1e-9)
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> PacedReplay:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        producer = make_producer(self.settings.kafka)
        await producer.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        topic = self.settings.kafka.topic("events")
        try:
            for start in range(0, len(self.events), SEND_CHUNK):
                chunk = self.events[start : start + SEND_CHUNK]
                futures = [await producer.send(topic, dumps(r.value), key=r.key.encode()) for r in chunk]
                await asyncio.gather(*futures)
                self.sent += len(chunk)
                delay = self.sent / self.rate - (loop.time() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await producer.stop()

    async def wait_sent(self, n: int, services: Sequence[Service]) -> None:
        async def reached() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # a failed replay raises here
            return self.sent >= n

        await wait_for_services(reached, max(60.0, len(self.events) / self.rate * 3), f"{n} events sent", services)


async def run_chaos(settings: Settings, opts: ChaosOptions, workdir: Path, progress: bool = True) -> dict[str, Any]:
    """The whole scenario (see the module docstring); returns the report."""

    def say(msg: str) -> None:
        if progress:
            print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    t_start = time.monotonic()
    stats = ReplayStats()
    records = list(read_log(opts.dataset, "taobao", limit=opts.limit, stats=stats))
    items = [r for r in records if r.topic == "items"]
    events = [r for r in records if r.topic == "events"]
    expected = Counter(r.key for r in events)
    last_ts: dict[str, float] = {}
    for r in events:
        last_ts[r.key] = max(last_ts.get(r.key, r.ts), r.ts)
    n_parts = load_topics()["events"].partitions
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        base = settings.replace(
            broker=broker.url,
            app_id="chaos",
            snapshot_interval_s=opts.snapshot_interval_s,
            web_port=free_port(),
            data_dir=str(workdir / "encoder"),
        )
        await apply_topics(base.kafka)
        names = ["w1", "w2"]
        per_worker = {n: base.replace(worker_id=n, web_port=free_port(), data_dir=str(workdir / n)) for n in names}
        encoder = Service("encoder", ["encoder"], base, workdir).start()
        command = ["worker", "--loglevel", opts.loglevel]
        workers = {n: Service(n, command, s, workdir).start() for n, s in per_worker.items()}
        services = [encoder, *workers.values()]
        watcher = RecommendationWatcher(base.kafka)
        try:
            say(f"{len(items):,} items, {len(events):,} events ({stats.rows:,} rows); starting encoder + 2 workers")
            await publish(items, base.kafka, progress=False)

            async def group_ready() -> dict[str, dict[str, Any]] | None:
                got = {n: await worker_stats(s) for n, s in per_worker.items()}
                for n, g in got.items():
                    # the worker_id check guards against another process answering on a reused port
                    if g is None or g.get("worker_id") != n or g["items_indexed"] < len(items):
                        return None
                    if not g["assigned_partitions"]:
                        return None
                held = [p for g in got.values() for p in g["assigned_partitions"]]  # type: ignore[union-attr]
                return got if sorted(held) == list(range(n_parts)) else None  # type: ignore[return-value]

            ready = await wait_for_services(group_ready, opts.startup_timeout_s, "both workers in the group", services)
            say("group formed: " + ", ".join(f"{n} holds {g['assigned_partitions']}" for n, g in ready.items()))
            await watcher.start()
            replay = PacedReplay(base, events, opts.replay_s).start()

            # --- crash ------------------------------------------------------------------------------------------
            survivor, victim = names
            await replay.wait_sent(int(len(events) * opts.kill_at), services)
            before = {n: await worker_stats(s) for n, s in per_worker.items()}
            snap = await _latest_snapshot(base, victim)
            workers[victim].kill()
            t_kill = time.monotonic()
            killed_at = replay.sent
            victim_parts = before[victim]["assigned_partitions"] if before[victim] else []
            offsets_at_kill = dict((before[survivor] or {}).get("next_offsets", {}))
            say(f"kill -9 {victim} (held {victim_parts}) after {killed_at:,} events sent")

            held_all: list[float] = []

            async def taken_over() -> dict[str, Any] | None:
                got = await worker_stats(per_worker[survivor])
                if got is None or got["assigned_partitions"] != list(range(n_parts)):
                    return None
                if not held_all:
                    held_all.append(time.monotonic() - t_kill)
                nxt = got["next_offsets"]
                moved = all(nxt.get(str(p), -1) > offsets_at_kill.get(str(p), -1) for p in victim_parts)
                return got if moved else None

            live = [encoder, workers[survivor]]
            await wait_for_services(taken_over, opts.takeover_timeout_s, f"{survivor} to take over", live)
            recovery_s = time.monotonic() - t_kill
            say(f"{survivor} took over every partition and published from them in {recovery_s:.1f}s")

            # --- restart ------------------------------------------------------------------------------------------
            await asyncio.sleep(opts.restart_delay_s)
            workers[victim].start()

            async def resumed() -> dict[str, Any] | None:
                got = await worker_stats(per_worker[victim])
                return got if got is not None and got["model_ready"] else None

            restarted = await wait_for_services(resumed, opts.startup_timeout_s, f"{victim} restarted", services)
            say(f"{victim} restarted: model resumed at own step {restarted['model_restored_own_steps']}")

            # --- drain ------------------------------------------------------------------------------------------
            await replay.wait_sent(len(events), services)

            async def drained() -> dict[str, int] | None:
                if watcher.missing(last_ts):
                    return None
                counts = await applied_counts(base)
                return counts if sum(counts.values()) >= len(events) else None

            try:
                await wait_for_services(drained, opts.drain_timeout_s, "every event applied", services, poll_s=1.0)
            except TimeoutError as exc:
                say(f"not drained: {exc}")
            applied = await applied_counts(base)
            after = {n: await worker_stats(s) for n, s in per_worker.items()}
            lost, dupes, off = compare(expected, applied)
            report: dict[str, Any] = {
                "events_in": len(events),
                "events_applied": sum(applied.values()),
                "lost": lost,
                "duplicates_applied": dupes,
                "dead_letters": await _count(base, "dead-letters"),
                "recovery_s": round(recovery_s, 2),
                "takeover_s": round(held_all[0], 2) if held_all else None,
                "workers": len(names),
                "users": len(expected),
                "users_off": off,
                "users_without_recommendations": watcher.missing(last_ts),
                "rows": stats.rows,
                "killed": victim,
                "killed_after_events_sent": killed_at,
                "partitions_taken_over": victim_parts,
                "recommendations_before_kill": {n: (b or {}).get("recommendations", 0) for n, b in before.items()},
                "victim_snapshot_own_steps": (snap or {}).get("contribution", {}).get("steps", 0),
                "victim_restored_own_steps": restarted["model_restored_own_steps"],
                "victim_restored_model_steps": restarted["model_restored_steps"],
                "victim_events_after_restart": (after.get(victim) or {}).get("events", 0),
                "duplicates_skipped": sum((a or {}).get("duplicates_skipped", 0) for a in after.values()),
                "assigned_after_restart": {n: (a or {}).get("assigned_partitions", []) for n, a in after.items()},
                "elapsed_s": round(time.monotonic() - t_start, 1),
            }
            say(orjson.dumps({k: report[k] for k in REPORT_KEYS}).decode())
            return report
        finally:
            await watcher.stop()
            for service in services:
                with contextlib.suppress(Exception):
                    service.stop()
