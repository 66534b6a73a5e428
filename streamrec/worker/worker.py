"""What the worker's agents do: batches through the core and out, the followers, telemetry (:class:`Worker`)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import faust
import orjson
from aiokafka.structs import ConsumerRecord

from streamrec.io.kafka import DeadLetters, key_partition
from streamrec.model.events import MAX_ID_LEN, Event, InvalidMessage, dumps, event_from_dict, loads_message
from streamrec.model.itemstats import ItemUpdate, decode_updates
from streamrec.model.rules import parse_rule, rule_name
from streamrec.model.shared_model import SNAPSHOT_KEY_PREFIX, snapshot_key
from streamrec.settings import Settings
from streamrec.worker.core import TRIM_AFTER_EVENTS, CoreClient, CoreError
from streamrec.worker.follow import follow
from streamrec.worker.gaps import GapFiller
from streamrec.worker.memory import release_free_memory, rss_bytes
from streamrec.worker.profile_table import TableProfileStore
from streamrec.worker.publisher import BatchPublisher
from streamrec.worker.routing import Routes, plan_forgets, position_key, stored_offsets
from streamrec.worker.stats import Reading, WorkerStats, cpu_by_process, metrics, stats_json
from streamrec.worker.telemetry import Histogram, Metric

log = logging.getLogger(__name__)

REFRESH_TICK_S = 0.1
"""How often the worker replaces lists that hold a withdrawn item (``withdrawal_refresh_per_s`` spread over ticks)."""
HTTP_OK = 200
HTTP_BAD_REQUEST = 400
HTTP_NOT_FOUND = 404
HTTP_UNAVAILABLE = 503


class Worker:
    """Wires the core to Faust: holds the core client, the counters, the followers' state and the output path."""

    def __init__(
        self,
        settings: Settings,
        app: faust.App,
        with_query_encoder: bool = True,
        *,
        partitions: int,
        source_topic: str | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.source_topic = source_topic or settings.kafka.topic("events")
        """The topic the batches come from: ``events``, or the internal re-keyed topic with ``repartition``."""
        self.routes = Routes(partitions, settings.kafka.topic("events"), rekeyed=settings.batching.repartition)
        """Each user's murmur2 partition; counts the ``events`` records found elsewhere."""
        self.worker_id = settings.batching.worker_id or f"{socket.gethostname()}:{settings.web.web_port}"
        self.core = CoreClient(settings, self.worker_id, with_query_encoder, on_gone=self._core_gone)
        """The recommender and this worker's share of the model (:mod:`streamrec.worker.core`)."""
        self.snapshot_key = snapshot_key(self.worker_id)
        self.incarnation = uuid.uuid4().hex
        self.item_updates_key = f"{self.worker_id}/{self.incarnation}".encode()
        """Key of this process's ``item-updates`` messages: its own are skipped without decoding them, an earlier
        run's (another incarnation) are applied."""
        self.restored_steps = 0
        """The ranker's step count right after start-up: > 0 when it resumed from snapshots."""
        self.restored_own_steps = 0
        """This worker's own steps taken back from its last snapshot at start-up (0 on a first start)."""
        self._snapshots: dict[bytes, dict[str, Any]] = {}
        """Newest snapshot per key not handed to the core yet: all of them until the model is restored, then
        peers' (merged by the core, between batches, at the next sync)."""
        self.stats = WorkerStats()
        self.catalog_ready = asyncio.Event()
        self.model_ready = asyncio.Event()
        self._published_own_steps = -1
        self.dead_letters = DeadLetters(settings.kafka, self._send_raw)
        self.latency = Histogram()
        """Event published (its Kafka timestamp) → its user's recommendation sent, in ms."""
        self.gaps = GapFiller(app, settings.kafka, self.stats)
        self.next_offset: dict[int, int] = {}
        """Per partition of the topic the batches come from, the offset after the last event this worker processed:
        lag = highwater − it."""
        self.publisher = BatchPublisher(app)
        self.rules_ready = asyncio.Event()
        self.rules: dict[str, dict[str, Any]] = {}
        """The business rules in force, by name (validated values of the ``rules`` topic)."""
        self.refresh_pending: dict[str, float] = {}
        """Users whose last list holds a withdrawn item → when the item was withdrawn (oldest first)."""

    def _core_gone(self) -> None:
        """The core process died: stop this worker (its partitions go to the group, and nothing unprocessed was
        acknowledged) instead of holding partitions it can no longer serve."""
        log.critical("the core process is gone: stopping this worker")
        os.kill(os.getpid(), signal.SIGTERM)

    async def _send_raw(self, topic: str, key: bytes, value: bytes | None) -> None:
        await self.app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    # --- events -------------------------------------------------------------------------------------
    async def handle_batch(self, batch: Sequence[Any], store: TableProfileStore) -> None:
        """Apply a batch of Faust events: invalid ones to dead-letters, the rest through the core, then publish
        the changed profiles, the refreshed lists and the item updates as one send per partition."""
        await self.catalog_ready.wait()
        await self.model_ready.wait()
        await self.rules_ready.wait()
        t0 = time.perf_counter()
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.time()
            self.stats.cpu_at_first_batch = cpu_by_process(self.reading(None))
        batch = await self.gaps.fill(batch)
        valid: list[Event] = []
        positions: list[tuple[int, int]] = []
        stamps: list[float] = []
        users: set[str] = set()
        changelog_partition: dict[str, int] = {}
        """Per user, the partition of their latest event in the batch: their profile's changelog partition."""
        check_routes = self.source_topic == self.settings.kafka.topic("events")  # else re-keyed: routed right
        forgets = 0
        for fevent in batch:
            msg = fevent.message
            try:
                obj = loads_message(fevent.value, self.settings.kafka.max_message_bytes)
                event = event_from_dict(obj)
            except InvalidMessage as exc:
                await self.dead_letters.reject(msg.topic, fevent.value, str(exc), msg.key, msg.partition, msg.offset)
                continue
            users.add(event.user_id)
            if event.is_forget:  # published to every partition (streamrec forget): never misrouted
                forgets += 1
            else:
                changelog_partition[event.user_id] = msg.partition
                if check_routes and self.routes.observe(event.user_id, msg.partition):
                    self.stats.misrouted += 1
            if msg.timestamp:
                stamps.append(msg.timestamp)
            valid.append(event)
            positions.append((position_key(msg.partition, not check_routes), msg.offset))
        if valid:
            await self._apply(valid, positions, users, changelog_partition, forgets, store)
            if len(valid) >= TRIM_AFTER_EVENTS:  # this process's share, the batch's messages and the reply, now freed
                release_free_memory()
            self.stats.core_rss_settled_bytes = self.core.rss_bytes()
            self.stats.rss_settled_bytes = rss_bytes() + self.stats.core_rss_settled_bytes
        now = time.time()
        for stamp in stamps:
            self.latency.observe((now - stamp) * 1000.0)
        for fevent in batch:
            msg = fevent.message
            self.next_offset[msg.partition] = max(self.next_offset.get(msg.partition, 0), msg.offset + 1)
        self.stats.batches += 1
        self.stats.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        self.stats.last_batch_at = time.time()

    async def _apply(
        self,
        valid: list[Event],
        positions: list[tuple[int, int]],
        users: set[str],
        changelog_partition: dict[str, int],
        forgets: int,
        store: TableProfileStore,
    ) -> None:
        """Run a batch's valid events through the core and publish what it changed (the batch's profiles and
        the core's reply are freed when this returns, before the worker reads its settled memory)."""
        raw = store.raw_for(users)
        tombstones: dict[str, set[int]] = {}
        if forgets:
            valid, positions, tombstones = self._plan_forgets(valid, positions, raw)
        # the core runs elsewhere: meanwhile the loop keeps fetching, so the next batch is ready
        result = await self.core.process(valid, positions, raw)
        topic = self.settings.kafka.topic("recommendations")
        updates = self.settings.kafka.topic("item-updates")
        # tombstones first: lists made after a forget (fresh profile) must win
        await self.publisher.publish(
            store.write(result.profiles, changelog_partition, tombstones)
            + [(topic, None, user_id.encode(), None) for user_id in dict.fromkeys(result.forgotten)]
            + [(topic, None, key, value) for key, value in result.recommendations]
            + [(updates, None, self.item_updates_key, value) for value in result.item_updates]
        )
        if forgets:
            self.stats.forgotten += forgets
            # never the ids: personal data
            log.info("%d forget_user record(s): erased %d user(s)", forgets, len(set(result.forgotten)))
        self.stats.events += result.applied
        self.stats.duplicates += result.duplicates
        self.stats.recommendations += len(result.recommendations)

    def _plan_forgets(
        self, events: list[Event], positions: list[tuple[int, int]], raw: Mapping[str, bytes | None]
    ) -> tuple[list[Event], list[tuple[int, int]], dict[str, set[int]]]:
        """The batch without the forget copies that leave this worker's profiles alone, and the changelog
        tombstones the batch's copies write (:func:`~streamrec.worker.routing.plan_forgets`)."""
        offsets = {e.user_id: stored_offsets(raw.get(e.user_id)) for e in events if e.is_forget}
        rekeyed = self.source_topic != self.settings.kafka.topic("events")
        owned = {position_key(p, rekeyed) for p in self.assigned_partitions()} | {key for key, _ in positions}
        plan = plan_forgets(events, positions, offsets, owned, self.routes.home)
        kept = [i for i, keep in enumerate(plan.keep) if keep]
        return [events[i] for i in kept], [positions[i] for i in kept], plan.tombstones

    def repartition_key(self, source: Any) -> Callable[[bytes | None], bytes | None]:
        """The key ``events`` are re-keyed by (``repartition``): the user id, murmur2-partitioned by Faust's producer.

        ``source`` is the ``events`` stream being re-keyed: each record's partition is checked (and counted in
        ``misrouted_events``) as it is forwarded. A record that is not a valid event keeps its own key; the
        worker sends it to dead-letters when it arrives on the internal topic.
        """
        limit = self.settings.kafka.max_message_bytes

        def user_key(value: bytes | None) -> bytes | None:
            message = source.current_event.message
            try:
                event = event_from_dict(loads_message(value, limit))
            except InvalidMessage:
                return message.key  # type: ignore[no-any-return]
            if not event.is_forget and self.routes.observe(event.user_id, message.partition):
                self.stats.misrouted += 1
            return event.user_id.encode()

        return user_key

    # --- telemetry ----------------------------------------------------------------------------------
    def _assigned(self) -> list[Any]:
        """The partitions (TopicPartitions) of the topic the batches come from that this worker holds now; empty
        while between generations."""
        topic = self.source_topic
        try:
            return [tp for tp in self.app.consumer.assignment() if tp.topic == topic]
        except Exception as exc:  # the consumer is not started yet, or between generations
            log.debug("assignment unavailable: %r", exc)
            return []

    def assigned_partitions(self) -> list[int]:
        """Partitions of the topic the batches come from (``events``, or the re-keyed one) this worker holds now
        (empty while between generations)."""
        return sorted(tp.partition for tp in self._assigned())

    def consumer_lag(self) -> dict[int, int]:
        """Events not processed yet, per assigned partition of the topic the batches come from (highwater − next
        offset).

        On the local broker highwaters can lag the true end by a batch (see its notes), so this is a floor.
        """
        lag: dict[int, int] = {}
        for tp in self._assigned():
            try:
                high = self.app.consumer.highwater(tp)
            except Exception as exc:  # the consumer is between generations
                log.debug("consumer lag unavailable: %r", exc)
                break
            if high is not None:
                lag[tp.partition] = max(0, int(high) - self.next_offset.get(tp.partition, 0))
        return lag

    def reading(self, table: Mapping[bytes, bytes] | None = None) -> Reading:
        """Everything ``/stats`` and ``/metrics`` show, read now (``table``: the profiles table)."""
        return Reading(
            stats=self.stats,
            core=self.core.state,
            core_pid=self.core.pid,
            dead_letters=self.dead_letters.count,
            table=table,
            worker_id=self.worker_id,
            assigned_partitions=self.assigned_partitions(),
            next_offsets=dict(self.next_offset),
            consumer_lag=self.consumer_lag(),
            latency=self.latency,
            model_ready=self.model_ready.is_set(),
            restored_steps=self.restored_steps,
            restored_own_steps=self.restored_own_steps,
            rss_bytes=rss_bytes() + self.core.rss_bytes(),
            cpu_seconds=time.process_time(),
        )

    def stats_dict(self, table: Mapping[bytes, bytes] | None = None) -> dict[str, Any]:
        """Everything ``/stats`` shows: counters, plus who this worker is, what it holds and its model."""
        return stats_json(self.reading(table))

    def metrics(self, table: Mapping[bytes, bytes] | None = None) -> list[Metric]:
        """Everything ``/metrics`` shows (Prometheus computes events/s from the counters)."""
        return metrics(self.reading(table))

    async def explain(self, user_id: str, table: Mapping[bytes, bytes] | None) -> tuple[int, dict[str, Any]]:
        """``/explain?user=``: (HTTP status, body) — the user's list ranked now from their profile in this worker's
        table, with each feature's contribution to every score (read-only: nothing is learned, remembered or
        published). 404 with a message when the user's partition is not held here or they have no profile."""
        if not 1 <= len(user_id) <= MAX_ID_LEN:
            return HTTP_BAD_REQUEST, {"error": "bad_user", "message": f"a user id has 1 to {MAX_ID_LEN} characters"}
        partition = key_partition(user_id.encode(), range(self.app.conf.topic_partitions))
        where = {"user_id": user_id, "partition": partition, "worker_id": self.worker_id}
        if partition not in self.assigned_partitions():
            message = f"partition {partition} of events, which holds this user, is not held by this worker"
            return HTTP_NOT_FOUND, {**where, "error": "not_here", "message": message}
        raw = table.get(user_id.encode()) if table is not None else None
        if raw is None:
            return HTTP_NOT_FOUND, {**where, "error": "no_profile", "message": "no profile for this user here"}
        try:
            return HTTP_OK, await self.core.explain(raw)
        except CoreError as exc:
            return HTTP_UNAVAILABLE, {**where, "error": "core", "message": str(exc)}

    # --- catalogue ----------------------------------------------------------------------------------
    async def follow_catalog(self) -> None:
        """Load every item embedding, mark the catalogue ready, then keep applying new ones."""
        await follow(
            self.settings.kafka,
            self.settings.kafka.topic("item-embeddings"),
            self._apply_items,
            caught_up=self._catalog_loaded,
        )

    async def _apply_items(self, records: list[ConsumerRecord]) -> None:
        """Upsert or withdraw a run of ``item-embeddings`` records on the core (never under a running batch); bad
        ones go to dead-letters. Users whose last list holds a withdrawn item are queued for a fresh list."""
        live = self.catalog_ready.is_set()
        done = await self.core.upsert_items([r.value for r in records], live, [r.key for r in records])
        self.stats.item_visible_ms.extend(done.visible_ms)
        self.stats.items_withdrawn += done.withdrawn
        self.stats.withdrawal_applied_ms.extend(done.withdrawn_ms)
        now = time.time()
        for user in done.refresh:
            self.refresh_pending.setdefault(user, now)
        self.stats.refresh_pending = len(self.refresh_pending)
        for i, reason in done.rejected:
            r = records[i]
            await self.dead_letters.reject(r.topic, r.value, reason, r.key, r.partition, r.offset)

    async def refresh_withdrawn(self, store: TableProfileStore) -> None:
        """Give users whose last list holds a withdrawn item a fresh list, at most ``withdrawal_refresh_per_s`` a
        second, so withdrawing an item that sits in many lists never holds up the events.

        A refreshed list is published only if the user's profile did not change while it was made: a batch that
        changed it published a newer list (without the item) already.
        """
        per_tick = max(1, round(self.settings.lists.withdrawal_refresh_per_s * REFRESH_TICK_S))
        while True:
            await asyncio.sleep(REFRESH_TICK_S)
            if self.refresh_pending and self.model_ready.is_set():
                await self.refresh_some(store, per_tick)

    async def refresh_some(self, store: TableProfileStore, most: int) -> int:
        """Publish fresh lists for up to ``most`` of the users waiting for one (oldest first); returns how many."""
        users = list(itertools.islice(self.refresh_pending, most))
        since = {u: self.refresh_pending.pop(u) for u in users}
        self.stats.refresh_pending = len(self.refresh_pending)
        raw = {u: v for u, v in store.raw_for(users).items() if v is not None}  # the others moved to a peer
        if not raw:
            return 0
        lists = await self.core.refresh_lists(raw)
        now = time.time()
        current = store.raw_for(raw)
        topic = self.settings.kafka.topic("recommendations")
        fresh = [(topic, None, key, value) for key, value in lists if current[key.decode()] == raw[key.decode()]]
        await self.publisher.publish(fresh)
        self.stats.lists_refreshed += len(fresh)
        self.stats.refresh_ms.extend((now - since[key.decode()]) * 1000.0 for _, _, key, _ in fresh)
        return len(fresh)

    # --- business rules -----------------------------------------------------------------------------
    async def follow_rules(self) -> None:
        """Load every rule in force, mark the rules ready, then keep applying changes (each run within one fetch)."""
        await follow(
            self.settings.kafka, self.settings.kafka.topic("rules"), self._apply_rules, caught_up=self._rules_loaded
        )

    async def _apply_rules(self, records: list[ConsumerRecord]) -> None:
        """Fold a run of ``rules`` records in (a tombstone deletes its rule) and hand the result to the core; an
        invalid rule goes to dead-letters with the reason, and the rule held under its name stays in force."""
        rules = dict(self.rules)
        for r in records:
            try:
                name = rule_name(r.key)
                if r.value is None:
                    rules.pop(name, None)
                else:
                    rules[name] = parse_rule(r.key, r.value).to_dict()
            except InvalidMessage as exc:
                await self.dead_letters.reject(r.topic, r.value, f"invalid rule: {exc}", r.key, r.partition, r.offset)
        if rules != self.rules:
            await self.core.set_rules(rules)
            self.rules = rules
            self.stats.rules_in_force = len(rules)
            if self.rules_ready.is_set():
                log.info("rules in force: %s", ", ".join(sorted(rules)) or "none")

    async def _rules_loaded(self, records: int) -> None:
        log.info("rules loaded: %d record(s), %d rule(s) in force", records, len(self.rules))
        self.rules_ready.set()

    async def _catalog_loaded(self, records: int) -> None:
        await self.core.warm_up(self.settings.batching.batch_size)  # one-time working memory, before the baseline
        await self.core.trim()  # the baseline, like every big batch, without the loading's freed buffers
        await self.core.freeze_heap(collect=True)  # the catalogue and model out of the collector's scans
        if self.settings.batching.gc_freeze_events and self.settings.batching.core_process:
            gc.collect()  # this process's start-up heap too, once (Faust's own objects make cycles: never again)
            gc.freeze()
        release_free_memory()
        log.info("catalogue loaded: %d records, %d items indexed", records, self.core.state.items_indexed)
        self.stats.catalog_ready_at = time.time()
        self.stats.rss_ready_bytes = rss_bytes() + self.core.rss_bytes()
        self.stats.core_rss_ready_bytes = self.core.rss_bytes()
        self.catalog_ready.set()

    # --- item statistics from the peers --------------------------------------------------------------
    async def follow_item_updates(self) -> None:
        """Apply every other worker's item updates (from the start of the topic: a restarted worker rebuilds its
        item statistics from the whole retained history, its own earlier incarnation's included)."""
        if not self.settings.batching.share_item_stats:
            return
        await self.catalog_ready.wait()
        await follow(
            self.settings.kafka,
            self.settings.kafka.topic("item-updates"),
            self._apply_peer_item_updates,
            skip_key=self.item_updates_key,  # this very process's own: already applied
        )

    async def _apply_peer_item_updates(self, records: list[ConsumerRecord]) -> None:
        updates: list[ItemUpdate] = []
        for record in records:
            try:
                updates += decode_updates(record.value)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
                log.warning("ignoring an unreadable item-updates record: %r", exc)
        if updates:
            self.stats.item_updates_applied += await self.core.apply_item_updates(updates)

    # --- model snapshots: one model across workers -----------------------------------------------------
    async def restore_model(self) -> None:
        """Resume this worker's own contribution and merge every peer's, then keep following the topic for
        peers' newer snapshots, merged at each :meth:`sync_model`."""
        await follow(
            self.settings.kafka,
            self.settings.kafka.topic("model-snapshots"),
            self._keep_snapshots,
            caught_up=self._resume_model,
            skip_key=self.snapshot_key,  # once resumed, this worker's own snapshots are behind its model
        )

    async def _keep_snapshots(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            if record.value is None or record.key is None:
                continue
            try:
                self._snapshots[record.key] = orjson.loads(record.value)
            except orjson.JSONDecodeError as exc:
                log.warning("ignoring unreadable model snapshot %r: %s", record.key, exc)

    async def _resume_model(self, records: int) -> None:
        latest, self._snapshots = self._snapshots, {}
        contributions = {k: v for k, v in latest.items() if k.startswith(SNAPSHOT_KEY_PREFIX.encode())}
        try:
            await self.core.restore_model(contributions)
        except CoreError as exc:
            log.warning("ignoring incompatible model snapshot: %s", exc.__cause__ or exc)
        state = self.core.state
        self.restored_steps = state.model_steps
        self.restored_own_steps = state.own_steps
        log.info(
            "ranker %s resumed from %d snapshot records (own steps %d, peers %s)",
            state.model_version,
            records,
            state.own_steps,
            state.peers,
        )
        self._published_own_steps = state.own_steps
        self.model_ready.set()

    async def sync_model(self) -> None:
        """Merge peers' contributions received since the last sync; publish ours if this worker learned."""
        if not self.model_ready.is_set():
            return
        pending, self._snapshots = self._snapshots, {}
        snap = await self.core.merge_and_snapshot(pending)
        if snap["contribution"]["steps"] == self._published_own_steps:
            return
        await self._send_raw(self.settings.kafka.topic("model-snapshots"), self.snapshot_key, dumps(snap))
        self._published_own_steps = snap["contribution"]["steps"]
