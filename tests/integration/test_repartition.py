"""``STREAMREC_REPARTITION=true`` on the real local broker: any producer's placement gives one state per user.

Events are published to the partitions a CRC32 (librdkafka) and a round-robin (kafka-go) producer would choose;
the worker re-keys them with Faust's ``group_by`` onto its internal topic, created with the partitions of
``events``, so every user ends up with one profile holding all their events, and a forget erases it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.io.kafka import client_kwargs
from streamrec.io.recommendations import latest_recommendation
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, worker_stats
from streamrec.model.profiles import UserProfile, applied_count
from streamrec.settings import Settings
from streamrec.worker.app import repartition_topic
from tests.integration.test_clients import (
    CRC_EVENTS,
    PARTITIONS,
    RR_EVENTS,
    changelog,
    history,
    murmur2,
    publish_placed,
    view,
)
from tests.integration.test_operations import catalogue, streamrec_cli
from tests.integration.test_pipeline import publish, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


SWITCHED_USERS = 5
SWITCHED_EVENTS = 3
"""Events each of these users sends before re-keying is switched on, and again after."""


@dataclass
class Rekeying:
    settings: Settings
    worker: Service

    def stats(self) -> dict[str, Any]:
        return wait_for(lambda: run(worker_stats(self.settings)), "worker /stats", [self.worker])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rekeying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rekeying]:
    workdir: Path = tmp_path_factory.mktemp("repartition")
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings.of(
            broker=broker.url,
            app_id="rekey",
            web_port=free_port(),
            data_dir=str(workdir / "data"),
            snapshot_interval_s=2.0,
            repartition=True,
        )
        run(apply_topics(settings.kafka))
        run(publish(settings, catalogue()))
        # first without re-keying, as a deployment runs before its operator switches it on
        plain = settings.replace(repartition=False)
        worker = start_worker(plain, workdir)
        run(publish_placed(plain, switched_events(0.0)))
        wait_for(
            lambda: run(worker_stats(plain))["events"] == SWITCHED_USERS * SWITCHED_EVENTS,  # type: ignore[index]
            "the events before the switch",
            [worker],
        )
        assert worker.stop() == 0, worker.tail(40)
        worker = start_worker(settings, workdir)
        try:
            yield Rekeying(settings, worker)
        finally:
            assert worker.stop() == 0, worker.tail(40)


def start_worker(settings: Settings, workdir: Path) -> Service:
    worker = Service("worker", ["worker", "--loglevel", "warning"], settings, workdir).start()
    wait_for(
        lambda: (s := run(worker_stats(settings))) and s["catalog_ready_at"] and s["assigned_partitions"],
        "the worker",
        [worker],
    )
    return worker


def switched_events(t0: float) -> list[tuple[str, int, Any]]:
    users = [f"sw-{k}" for k in range(SWITCHED_USERS)]
    return [(u, murmur2(u), view(u, 20 * k + j, t0 + 100.0 + j)) for k, u in enumerate(users) for j in range(3)]


async def topic_partitions(settings: Settings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka))
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
    finally:
        await admin.close()


def test_switching_re_keying_on_keeps_every_profile_and_skips_no_event(rekeying: Rekeying) -> None:
    """The re-keyed topic's offsets start at 0, below those the profiles recorded for events' own partitions
    (first test of the module: nothing re-keyed yet); kept apart, none of the new events is taken for a
    redelivery."""
    settings = rekeying.settings
    before = rekeying.stats()
    run(publish_placed(settings, switched_events(1_000.0)))
    wait_for(
        lambda: rekeying.stats()["events"] >= before["events"] + SWITCHED_USERS * SWITCHED_EVENTS,
        "the events after the switch",
        [rekeying.worker],
        timeout=60,
    )
    assert rekeying.stats()["duplicates_skipped"] == before["duplicates_skipped"]
    log = changelog(settings)
    for k in range(SWITCHED_USERS):
        u = f"sw-{k}"
        assert applied_count(log[(u.encode(), murmur2(u))][-1]) == 2 * SWITCHED_EVENTS  # type: ignore[arg-type]


def test_every_user_gets_one_profile_with_all_their_events_whatever_the_producer(rekeying: Rekeying) -> None:
    settings = rekeying.settings
    placed = history()
    before = rekeying.stats()
    run(publish_placed(settings, placed))
    wait_for(
        lambda: rekeying.stats()["events"] >= before["events"] + len(placed), "every event applied", [rekeying.worker]
    )
    stats = rekeying.stats()
    assert stats["events"] - before["events"] == len(placed) and stats["dead_letters"] == 0
    # the misrouted events are still counted (as they are re-keyed), so an operator can tell when to stop re-keying
    assert stats["misrouted_events"] == before["misrouted_events"] + sum(1 for u, p, _ in placed if p != murmur2(u))
    # Faust created the internal topic, partitioned like events (the profile table follows it)
    assert run(topic_partitions(settings))[repartition_topic(settings)] == PARTITIONS

    users = sorted({u for u, _, _ in placed})
    published = {u: [e for v, _, e in placed if v == u] for u in users}
    log = changelog(settings)
    for u in users:
        records = {p: v for (k, p), v in log.items() if k == u.encode()}
        assert list(records) == [murmur2(u)], (u, sorted(records))  # one place: the user's murmur2 partition
        profile = UserProfile.from_bytes(records[murmur2(u)][-1])  # type: ignore[arg-type]
        assert profile.events == len(published[u]) in (CRC_EVENTS, RR_EVENTS)
        assert sorted(profile.recent) == sorted(e.item_id for e in published[u])  # type: ignore[type-var]
    assert stats["profiles"] == len(users) + SWITCHED_USERS  # and the users of the switch
    wait_for(
        lambda: all(run(latest_recommendation(settings.kafka, u)) for u in users),
        "a list for everyone",
        [rekeying.worker],
    )


def test_forget_erases_a_round_robin_user_once_re_keyed(rekeying: Rekeying) -> None:
    settings = rekeying.settings
    user, home = "rr-2", murmur2("rr-2")
    before = rekeying.stats()
    streamrec_cli(settings, "forget", user)
    wait_for(
        lambda: rekeying.stats()["forgotten_users"] == before["forgotten_users"] + PARTITIONS,
        "the forget request's copies, all re-keyed to the user's partition",
        [rekeying.worker],
    )
    assert rekeying.stats()["misrouted_events"] == before["misrouted_events"]  # forget copies are not misrouted
    assert changelog(settings)[(user.encode(), home)][-1] is None
    assert run(latest_recommendation(settings.kafka, user)) is None
    # a new event, on another partition than the user's, starts a fresh profile
    run(publish_placed(settings, [(user, (home + 1) % PARTITIONS, view(user, 42, 900.0))]))
    log = wait_for(
        lambda: (c := changelog(settings)) and c[(user.encode(), home)][-1] is not None and c,
        "the new profile",
        [rekeying.worker],
    )
    assert applied_count(log[(user.encode(), home)][-1]) == 1  # type: ignore[arg-type]
