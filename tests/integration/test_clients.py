"""Producers with another partitioner than murmur2, on the real local broker with two real worker processes.

librdkafka clients hash keys with CRC32 and kafka-go round-robins; the local broker cannot talk to librdkafka
(README, "Publishing from other clients"), so their placement is reproduced by publishing with aiokafka to the
partition such a client would choose. Users' events then sit on other partitions than their murmur2 one, or on
several, and therefore on both workers: they still get profiles and lists, the worker counts exactly those
events as misrouted, and ``streamrec forget`` erases such a user on both workers, also after both restart.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamrec.io.kafka import key_partition, make_producer
from streamrec.io.recommendations import latest_recommendation
from streamrec.io.topics import apply_topics, load_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, worker_stats
from streamrec.model.events import Event, dumps
from streamrec.model.profiles import applied_count
from streamrec.settings import Settings
from streamrec.worker.profile_table import changelog_topic
from tests.integration.test_operations import catalogue, item_id, streamrec_cli
from tests.integration.test_pipeline import publish, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

APP_ID = "clients"
PARTITIONS = load_topics()["events"].partitions
CRC_USERS = 8
RR_USERS = 8
OK_USERS = 4
CRC_EVENTS = 4
RR_EVENTS = PARTITIONS
"""A round-robin user's events: one on every partition, so on both workers."""
WARNING = re.compile(r"events partition (\d+) holds events of users whose murmur2 partition is another")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def murmur2(user: str) -> int:
    return key_partition(user.encode(), list(range(PARTITIONS)))


def crc32(user: str) -> int:
    """librdkafka's default (``consistent_random``) partition of a keyed message: CRC32 of the key."""
    return zlib.crc32(user.encode()) % PARTITIONS


def crc_users(n: int) -> list[str]:
    """Users whose CRC32 partition is not their murmur2 one (for most keys they differ)."""
    return [u for u in (f"crc-{k}" for k in range(100)) if crc32(u) != murmur2(u)][:n]


Placed = tuple[str, int, Event]
"""(user, partition, event)."""


def view(user: str, n: int, ts: float) -> Event:
    return Event(user, "view", ts, item_id=item_id(n % 200))


def history() -> list[Placed]:
    """Every user's events with the partition their producer would choose."""
    out: list[Placed] = []
    for k, u in enumerate(crc_users(CRC_USERS)):
        out += [(u, crc32(u), view(u, 10 * k + j, 100.0 + j)) for j in range(CRC_EVENTS)]
    for k in range(RR_USERS):  # kafka-go's default: round-robin, whatever the key
        u = f"rr-{k}"
        out += [(u, (k + j) % PARTITIONS, view(u, 7 * k + j, 100.0 + j)) for j in range(RR_EVENTS)]
    for k in range(OK_USERS):
        u = f"ok-{k}"
        out += [(u, murmur2(u), view(u, 3 * k + j, 100.0 + j)) for j in range(CRC_EVENTS)]
    return out


async def publish_placed(settings: Settings, placed: list[Placed]) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for user, partition, event in placed:
            await producer.send(
                settings.kafka.topic("events"), dumps(event.to_dict()), key=user.encode(), partition=partition
            )
        await producer.flush()
    finally:
        await producer.stop()


def changelog(settings: Settings) -> dict[tuple[bytes, int], list[bytes | None]]:
    """Every value of the profiles changelog per (user, partition), in order."""
    out: dict[tuple[bytes, int], list[bytes | None]] = {}
    for r in run(read_all(settings, changelog_topic(settings))):
        out.setdefault((r.key, r.partition), []).append(r.value)
    return out


def last_recommendation_record(settings: Settings, user: str) -> bytes | None:
    values = [r.value for r in run(read_all(settings, "recommendations")) if r.key == user.encode()]
    assert values, f"no recommendations record for {user}"
    return values[-1]  # type: ignore[no-any-return]


@dataclass
class Fleet:
    workdir: Path
    settings: Settings
    """The shared settings (broker, app id); each worker has its own port, id and data dir."""
    workers: list[Settings]
    services: list[Service]

    def start(self) -> None:
        self.services = [
            Service(s.batching.worker_id, ["worker", "--loglevel", "warning"], s, self.workdir).start()
            for s in self.workers
        ]
        wait_for(self.settled, "both workers ready, each with its share of the partitions", self.services)

    def stop(self) -> list[int | None]:
        return [s.stop() for s in self.services]

    def settled(self) -> list[dict[str, Any]] | None:
        stats = [run(worker_stats(s)) for s in self.workers]
        if not all(st and st["catalog_ready_at"] for st in stats):
            return None
        parts = [set(st["assigned_partitions"]) for st in stats]  # type: ignore[index]
        if not all(parts) or parts[0] & parts[1] or parts[0] | parts[1] != set(range(PARTITIONS)):
            return None
        return stats  # type: ignore[return-value]

    def stats(self) -> list[dict[str, Any]]:
        return wait_for(self.settled, "both workers' /stats", self.services)  # type: ignore[no-any-return]

    def total(self, key: str) -> int:
        return sum(int(st[key]) for st in self.stats())

    def owner_partitions(self) -> list[list[int]]:
        return [st["assigned_partitions"] for st in self.stats()]

    def logs(self) -> list[str]:
        return [s.log_path.read_text(errors="replace") for s in self.services]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir: Path = tmp_path_factory.mktemp("clients")
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings.of(broker=broker.url, app_id=APP_ID, snapshot_interval_s=2.0)
        run(apply_topics(settings.kafka))
        run(publish(settings, catalogue()))
        workers = [
            settings.replace(web_port=free_port(), worker_id=f"worker-{n}", data_dir=str(workdir / f"data-{n}"))
            for n in (1, 2)
        ]
        f = Fleet(workdir, settings, workers, [])
        f.start()
        try:
            yield f
        finally:
            codes = f.stop()
            assert codes == [0, 0], "\n".join(s.tail(40) for s in f.services)


def test_events_on_crc32_and_round_robin_partitions_get_profiles_lists_and_are_counted(fleet: Fleet) -> None:
    settings = fleet.settings
    placed = history()
    misrouted = [(u, p) for u, p, _ in placed if p != murmur2(u)]
    assert 0 < len(misrouted) < len(placed)
    run(publish_placed(settings, placed))
    wait_for(lambda: fleet.total("events") >= len(placed), "every event applied", fleet.services)
    assert fleet.total("events") == len(placed)
    users = sorted({u for u, _, _ in placed})
    wait_for(
        lambda: all(run(latest_recommendation(settings.kafka, u)) for u in users), "a list for everyone", fleet.services
    )

    # counted exactly, on /stats and /metrics alike, and warned about once per partition and worker
    assert fleet.total("misrouted_events") == len(misrouted)
    logs = fleet.logs()
    warned = [[int(p) for p in WARNING.findall(log)] for log in logs]
    assert all(len(w) == len(set(w)) for w in warned), warned
    assert set(warned[0]) | set(warned[1]) == {p for _, p in misrouted}
    for w, owned in zip(warned, fleet.owner_partitions(), strict=True):
        assert set(w) <= set(owned)

    # profiles: a CRC32 user's on one partition with all their events; a round-robin user's split between the
    # workers, each worker's part holding the events of its partitions
    log = changelog(settings)
    owners = fleet.owner_partitions()
    for u in users:
        live = {p: applied_count(v[-1]) for (k, p), v in log.items() if k == u.encode() and v[-1] is not None}
        if u.startswith("rr-"):
            per_worker = [max((n for p, n in live.items() if p in owned), default=0) for owned in owners]
            assert per_worker == [len(owned) for owned in owners], (u, live)
        else:
            assert max(live.values()) == CRC_EVENTS and set(live) == {crc32(u) if u.startswith("crc-") else murmur2(u)}


def probe(fleet: Fleet, user: str, partitions: list[int], ts: float) -> list[int]:
    """Publish one event for ``user`` on each of ``partitions``; returns each partition's new profile's event count."""
    before = fleet.total("events")
    before_log = changelog(fleet.settings)
    run(publish_placed(fleet.settings, [(user, p, view(user, 100 + p, ts)) for p in partitions]))
    wait_for(lambda: fleet.total("events") >= before + len(partitions), "the probe events", fleet.services)
    log = wait_for(
        lambda: (
            (c := changelog(fleet.settings))
            and all(
                len(c.get((user.encode(), p), [])) > len(before_log.get((user.encode(), p), [])) for p in partitions
            )
            and c
        ),
        "the probe's profiles",
        fleet.services,
    )
    return [applied_count(log[(user.encode(), p)][-1]) for p in partitions]  # type: ignore[arg-type]


def test_forget_erases_a_misrouted_user_on_both_workers_and_after_both_restart(fleet: Fleet) -> None:
    settings = fleet.settings
    live_rr, restart_rr, crc = "rr-0", "rr-1", crc_users(1)[0]
    control = "ok-0"
    forgotten = [live_rr, restart_rr, crc]
    before = changelog(settings)
    for u in forgotten:
        assert any(v[-1] is not None for (k, _), v in before.items() if k == u.encode())
    requests = fleet.total("forgotten_users")

    for u in forgotten:
        out = streamrec_cli(settings, "forget", u)
        assert f"forget_user request for '{u}' published" in out and f"({PARTITIONS} partitions)" in out
    # one record per partition and request, counted by the worker that owns the partition
    wait_for(
        lambda: fleet.total("forgotten_users") == requests + len(forgotten) * PARTITIONS,
        "the forget requests",
        fleet.services,
    )

    # every changelog partition ends with a tombstone for each of them: none of their profiles can come back
    log = changelog(settings)
    for u in forgotten:
        parts = {p: v for (k, p), v in log.items() if k == u.encode()}
        assert sorted(parts) == list(range(PARTITIONS)), (u, sorted(parts))
        assert all(v[-1] is None for v in parts.values()), u
        assert last_recommendation_record(settings, u) is None
        assert run(latest_recommendation(settings.kafka, u)) is None
    assert run(latest_recommendation(settings.kafka, control)) is not None
    assert not any(u in text for text in fleet.logs() for u in forgotten)  # requests are logged without ids

    # in memory too: a new event on each worker starts a fresh profile there
    owners = fleet.owner_partitions()
    assert probe(fleet, live_rr, [owners[0][0], owners[1][0]], 500.0) == [1, 1]

    # restart both: table recovery must not bring the forgotten users back on either worker
    control_events = applied_count(changelog(settings)[(control.encode(), murmur2(control))][-1])  # type: ignore[arg-type]
    assert fleet.stop() == [0, 0]
    fleet.start()
    owners = fleet.owner_partitions()
    assert probe(fleet, restart_rr, [owners[0][-1], owners[1][-1]], 600.0) == [1, 1]
    assert probe(fleet, crc, [crc32(crc)], 600.0) == [1]
    # ... while what was not forgotten came back: the control user's profile carries on from where it was
    assert probe(fleet, control, [murmur2(control)], 600.0) == [control_events + 1]
