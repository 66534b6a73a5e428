"""Prequential (test-then-train) evaluation on a replayed log, in process, no broker.

For every item event, each system is first asked for the top-k list it would publish for that user at
that moment; the list is scored against the event's item; only then does the system learn from the event.
``streamrec`` here is the very :class:`~streamrec.model.recommender.Recommender` the Faust agents run, with a
dict in place of the Faust table. Primary metrics count *discovery* events (the user's first interaction
with that item); all events are reported as a secondary metric. Beside accuracy, every system's scored lists are
measured for catalogue coverage, intra-list diversity, new-item exposure and novelty (:mod:`.list_metrics`).

With ``protocol="published"`` streamrec is replayed as the worker runs it instead (:func:`_replay_published`):
in micro-batches through the worker's core, each item event scored against the list last *published* to its
user, with the worker's bounded discovery rule — what a worker's ``/stats["online_quality"]`` shows after the
same log (``docs/evaluation.md``, "Online quality: the published protocol").

With ``workers > 1`` streamrec runs as that many workers would in a deployment
(:class:`ShardedStreamrecSystem`): each user's events go to the worker holding the user's partition (Kafka's
key hash), each worker has its own catalogue index, co-visitation, popularity and profiles, and the workers'
rankers are kept one model by exchanging contributions with :class:`~streamrec.model.shared_model.SharedModel`.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamrec.encoding.threads import limit_threads
from streamrec.lab.baselines import CooccurrenceBaseline, OnlineMFBaseline, PopularityBaseline, TextOnlyBaseline
from streamrec.lab.list_metrics import ItemVectors, ListMetrics
from streamrec.model.events import HIDE, ITEM_EVENT_TYPES, Event, Item, ItemEmbedding, event_from_dict, item_from_dict
from streamrec.model.metrics import MetricSums, OnlineCounts, PrequentialScore, hit_rank, quality
from streamrec.model.profiles import DictProfileStore, UserProfile
from streamrec.model.recommender import Recommender
from streamrec.model.shared_model import SharedModel
from streamrec.settings import Settings

DEFAULT_WINDOWS = 20
DEFAULT_SYNC_EVENTS = 1_000
"""Events between model exchanges of simulated workers: the deployed workers exchange every
``snapshot_interval_s`` (10 s), in which a worker under load applies a few thousand events."""
ALL_SYSTEMS = (
    "streamrec",
    "streamrec_no_learn",
    "popularity",
    "cooccurrence",
    "online_mf",
    "text_only",
    "sknn",
    "sasrec",
)
STREAMREC_SYSTEMS = ("streamrec", "streamrec_no_learn")
"""streamrec itself; every other system is a baseline (:func:`best_baseline`)."""
PREQUENTIAL = "prequential"
"""Every item event scored against the list the system ranks for its user right then (the default)."""
PUBLISHED = "published"
"""Every item event scored against the list last published to its user, as a worker measures it live."""
PROTOCOLS = (PREQUENTIAL, PUBLISHED)
PUBLISHED_SYSTEMS = STREAMREC_SYSTEMS
"""The systems the published protocol can replay: the worker's own core."""
SLOW_FIRST = ("sasrec", "streamrec", "online_mf", "streamrec_no_learn")
"""Parallel replays start in this order, the longest first, so that no long one is left for the end."""
TUNE_PREFIX = 0.2
"""Tunable systems choose their parameters on this leading fraction of the log's events."""


class System(Protocol):
    """What the harness needs from a recommender under test."""

    name: str

    def upsert_item(self, emb: ItemEmbedding) -> None: ...

    def recommend(self, user_id: str, now: float, k: int) -> list[str]: ...

    def learn(self, event: Event) -> None: ...


class StreamrecSystem:
    """The production core, driven one event at a time (one SGD step per labelled event)."""

    def __init__(self, settings: Settings, name: str = "streamrec") -> None:
        self.name = name
        self.recommender = Recommender(settings)
        self.store = DictProfileStore()
        self.dim = settings.retrieval.embedding_dim

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self.recommender.upsert_item(emb)

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        profile = self.store.get(user_id)
        # remember=True, as the worker does when it publishes: the list and pool become the next negatives
        lists = self.recommender.recommend(
            [profile or UserProfile.new(user_id, self.dim)], now, k=k, reasons=False, remember=True
        )
        return lists[0].item_ids

    def learn(self, event: Event) -> None:
        self.recommender.learn([event], self.store)


def partition_of(user_id: str, partitions: int) -> int:
    """The ``events`` partition of a user: Kafka's default partitioner (murmur2 of the key) on the user id.

    >>> partition_of("1", 6) == partition_of("1", 6)
    True
    """
    from streamrec.io.kafka import key_partition

    return key_partition(user_id.encode(), range(partitions))


class ShardedStreamrecSystem:
    """streamrec as ``workers`` workers in one consumer group, in process (for the scale-out quality check).

    Partitions go to workers round-robin (partition ``p`` → worker ``p mod workers``), as the group's
    assignor spread them in the chaos runs. Every worker sees every item (each follows the whole catalogue),
    only its users' events, merges its peers' ranker contributions every ``sync_every`` events and, with
    ``share_items``, applies its peers' item updates (:mod:`streamrec.model.itemstats`) as they happen.
    """

    def __init__(
        self, settings: Settings, workers: int, sync_every: int = DEFAULT_SYNC_EVENTS, share_items: bool = True
    ) -> None:
        from streamrec.io.topics import load_topics

        self.name = "streamrec"
        self.shards = [StreamrecSystem(settings.replace(share_item_stats=share_items)) for _ in range(workers)]
        self.models = [SharedModel(s.recommender.ranker, f"w{i}") for i, s in enumerate(self.shards)]
        self.partitions = load_topics()["events"].partitions
        self.sync_every = sync_every
        self.share_items = share_items
        self.since_sync = 0
        self.syncs = 0

    def shard(self, user_id: str) -> StreamrecSystem:
        return self.shards[partition_of(user_id, self.partitions) % len(self.shards)]

    def upsert_item(self, emb: ItemEmbedding) -> None:
        for shard in self.shards:
            shard.upsert_item(emb)

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        return self.shard(user_id).recommend(user_id, now, k)

    def learn(self, event: Event) -> None:
        owner = self.shard(event.user_id)
        result, _, _ = owner.recommender.learn([event], owner.store)
        if self.share_items:
            for peer in self.shards:
                if peer is not owner:
                    peer.recommender.apply_item_updates(result.item_updates)
        self.since_sync += 1
        if self.since_sync >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        """Every worker publishes its contribution and merges all of its peers' (what the timer does)."""
        snaps = [m.contribution() for m in self.models]
        for model in self.models:
            for snap in snaps:
                model.merge(snap)
        self.since_sync = 0
        self.syncs += 1


def tuning_grids() -> dict[str, tuple[Any, ...]]:
    """The systems tuned on the replay prefix, and their grids (first point wins ties)."""
    from streamrec.lab.sknn import SKNN_GRID

    return {"sknn": SKNN_GRID}


def make_systems(
    settings: Settings,
    names: Sequence[str],
    workers: int = 1,
    sync_every: int = DEFAULT_SYNC_EVENTS,
    params: Mapping[str, Any] | None = None,
    total_events: int = 0,
) -> list[System]:
    """The named systems; ``params`` holds a tuned or chosen parameter object per system (else its defaults)."""
    from streamrec.lab.sasrec import SasrecSystem
    from streamrec.lab.sknn import SknnBaseline

    chosen = dict(params or {})
    factories: dict[str, Any] = {
        "streamrec": lambda: (
            ShardedStreamrecSystem(settings, workers, sync_every) if workers > 1 else StreamrecSystem(settings)
        ),
        "streamrec_no_learn": lambda: StreamrecSystem(settings.replace(learn=False), "streamrec_no_learn"),
        "popularity": lambda: PopularityBaseline(settings),
        "cooccurrence": lambda: CooccurrenceBaseline(settings),
        "online_mf": lambda: OnlineMFBaseline(settings),
        "text_only": lambda: TextOnlyBaseline(settings),
        "sknn": lambda: SknnBaseline(settings, chosen.get("sknn")),
        "sasrec": lambda: SasrecSystem(settings, chosen.get("sasrec"), total_events=total_events),
    }
    unknown = set(names) - factories.keys()
    if unknown:
        raise ValueError(f"unknown system(s) {sorted(unknown)}; choose from {list(factories)}")
    return [factories[n]() for n in names]


def embed_catalog(items: Sequence[Item], settings: Settings) -> list[ItemEmbedding]:
    """Embeddings exactly as the encoder worker would publish them (the model loads only if any item has text)."""
    from streamrec.encoding.encoder import TextEncoder, fallback_embeddings, has_item_text

    if any(has_item_text(i) for i in items):
        return TextEncoder.from_settings(settings).embed_items(items)
    return fallback_embeddings(items, settings)


@dataclass
class EvalReport:
    dataset: str
    events: int
    scored: int
    k: int
    systems: dict[str, dict[str, Any]]
    """Per system: discovery metrics, all-event metrics, ``first_half`` / ``second_half`` of the discovery events,
    and for parametrised systems their ``params`` (and ``train_seconds`` for retrained ones)."""
    windows: dict[str, list[float]]
    seconds: dict[str, float]
    events_per_s: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """Each replay's CPU time in its process: what it costs on a machine that others share."""
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per tuned system: the prefix it was tuned on, every grid point's score there, and the chosen point."""
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per retrained system: its retrain schedule and training seconds, in total and per retrain."""
    wall_seconds: float = 0.0
    """The whole evaluation after loading and embedding the log: tuning and every replay, ``jobs`` at a time."""
    jobs: int = 1
    protocol: str = PREQUENTIAL
    batch_size: int | None = None
    """Events per micro-batch (the published protocol)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "batch_size": self.batch_size,
            "dataset": self.dataset,
            "events": self.events,
            "scored": self.scored,
            "k": self.k,
            "systems": self.systems,
            "windows": self.windows,
            "seconds": self.seconds,
            "events_per_s": self.events_per_s,
            "cpu_seconds": self.cpu_seconds,
            "tuning": self.tuning,
            "training": self.training,
            "wall_seconds": self.wall_seconds,
            "jobs": self.jobs,
        }


@dataclass
class _Job:
    """What every system's replay needs (shared with forked workers without pickling)."""

    records: list[Any]
    embeddings: dict[int, ItemEmbedding]
    settings: Settings
    k: int
    progress: bool
    workers: int = 1
    sync_every: int = DEFAULT_SYNC_EVENTS
    params: dict[str, Any] = field(default_factory=dict)
    total_events: int = 0
    batch_size: int = 1
    """Events per micro-batch of the published protocol."""

    _vectors: tuple[ItemVectors, int] | None = None

    def list_metrics(self) -> ListMetrics:
        """A fresh accumulator of the beyond-accuracy metrics, over the log's items and their embeddings (prepared
        once, before systems replay in forked processes)."""
        if self._vectors is None:
            vectors = ItemVectors.of({e.item.item_id: e.vector for e in self.embeddings.values()})
            items = set(vectors.row_of)
            for r in self.records:
                if r.topic == "events" and r.value.get("item_id") is not None:
                    items.add(r.value["item_id"])
            self._vectors = (vectors, len(items))
        return ListMetrics(*self._vectors)


@dataclass(frozen=True)
class _Task:
    """One replay: a system with its parameters over the whole log, or (``stop``) over a prefix when tuning."""

    name: str
    position: int
    params: Any = None
    stop: int | None = None
    label: str = ""


@dataclass
class _Result:
    task: _Task
    ranks: list[int | None]
    discoveries: list[bool]
    seconds: float
    stats: dict[str, Any]
    cpu_seconds: float
    beyond: dict[str, float] = field(default_factory=dict)
    """Coverage, intra-list diversity, new-item exposure and novelty of the lists scored (:mod:`.list_metrics`)."""


_JOB: _Job | None = None


def _replay(
    system: System, job: _Job, position: int = 0, stop: int | None = None, label: str | None = None
) -> tuple[list[int | None], list[bool], float, dict[str, float]]:
    """Test-then-train one system over the log (its first ``stop`` records): ranks of scored events, whether each
    was a discovery, seconds, and the beyond-accuracy metrics of its lists."""
    from tqdm import tqdm

    lists = job.list_metrics()
    seen: set[tuple[str, str]] = set()
    ranks: list[int | None] = []
    discoveries: list[bool] = []
    t0 = time.perf_counter()
    bar = tqdm(
        job.records[:stop],
        desc=f"{label or system.name:20}",
        unit="rec",
        disable=not job.progress,
        position=position,
        mininterval=2.0,
        leave=stop is None,
    )
    for i, record in enumerate(bar):
        if record.topic == "items":
            system.upsert_item(job.embeddings[i])
            continue
        event = event_from_dict(record.value)
        if event.is_forget or event.type == HIDE:  # requests, not interactions: nothing to score or learn from
            continue
        if event.type in ITEM_EVENT_TYPES and event.item_id is not None:
            pair = (event.user_id, event.item_id)
            discoveries.append(pair not in seen)
            seen.add(pair)
            ranked = system.recommend(event.user_id, event.ts, job.k)  # test ...
            ranks.append(hit_rank(event.item_id, ranked))
            lists.add(ranked)
            lists.observe(event.item_id)
        system.learn(event)  # ... then train
    return ranks, discoveries, time.perf_counter() - t0, lists.summary()


def _replay_published(name: str, job: _Job, position: int = 0) -> tuple[OnlineCounts, float]:
    """Replay the log as a worker runs it: items upserted as they come, events cut into micro-batches of
    ``job.batch_size`` and fed to the worker's core (:class:`~streamrec.worker.core.CoreService`: profiles kept
    as the table's bytes between batches, every touched user's list published after each batch). The core
    scores each item event against its user's last published list before learning it (online quality, with
    :func:`~streamrec.model.metrics.is_repeat` for discovery); returns its counts and the seconds taken.

    A worker that applied the same events in the same batches shows the same counts; the worker's batches are
    whatever has arrived (up to ``batch_size``), so only ``batch_size=1`` fixes them for a replay.
    """
    from tqdm import tqdm

    from streamrec.worker.core import CoreService

    settings = job.settings.replace(top_k=job.k, learn=job.settings.ranker.learn and name == "streamrec")
    searches = any(r.topic == "events" and r.value.get("type") == "search" for r in job.records)
    core = CoreService(settings, f"eval-{name}", with_query_encoder=searches, own_process=False)
    table: dict[str, bytes] = {}
    batch: list[Event] = []

    def flush() -> None:
        if not batch:
            return
        users = {e.user_id for e in batch}
        done = core.process(batch, [None] * len(batch), {u: table.get(u) for u in users})
        for user_id, raw in done.profiles.items():
            if raw is None:
                table.pop(user_id, None)
            else:
                table[user_id] = raw
        batch.clear()

    t0 = time.perf_counter()
    bar = tqdm(job.records, desc=f"{name:20}", unit="rec", disable=not job.progress, position=position, mininterval=2.0)
    for i, record in enumerate(bar):
        if record.topic == "items":
            flush()
            core.recommender.upsert_item(job.embeddings[i])
            continue
        batch.append(event_from_dict(record.value))
        if len(batch) >= job.batch_size:
            flush()
    flush()
    return core.recommender.online.counts(), time.perf_counter() - t0


def _evaluate_published(job: _Job, names: Sequence[str], dataset: str) -> EvalReport:
    unknown = set(names) - set(PUBLISHED_SYSTEMS)
    if unknown:
        raise ValueError(f"the {PUBLISHED} protocol replays {list(PUBLISHED_SYSTEMS)} only, not {sorted(unknown)}")
    t_start = time.perf_counter()
    results = {name: _replay_published(name, job, pos) for pos, name in enumerate(names)}
    elapsed = time.perf_counter() - t_start
    systems = {name: quality(counts.since_start) for name, (counts, _) in results.items()}
    n_events = sum(r.topic != "items" for r in job.records)
    return EvalReport(
        dataset=dataset,
        events=n_events,
        scored=int(next(iter(systems.values()))["scored"]) if systems else 0,
        k=job.k,
        systems=systems,
        windows={name: [] for name in names},
        seconds={name: secs for name, (_, secs) in results.items()},
        events_per_s=n_events * len(names) / elapsed if elapsed > 0 else 0.0,
        protocol=PUBLISHED,
        batch_size=job.batch_size,
    )


def _run(task: _Task, job: _Job) -> _Result:
    params = dict(job.params)
    if task.params is not None:
        params[task.name] = task.params
    cpu = time.process_time()
    [system] = make_systems(job.settings, [task.name], job.workers, job.sync_every, params, job.total_events)
    ranks, discoveries, seconds, beyond = _replay(system, job, task.position, task.stop, task.label or None)
    stats_of = getattr(system, "stats", None)
    stats = stats_of() if stats_of else {}
    return _Result(task, ranks, discoveries, seconds, stats, time.process_time() - cpu, beyond)


def _run_forked(task: _Task) -> _Result:
    assert _JOB is not None
    return _run(task, _JOB)


def prefix_stop(records: Sequence[Any], fraction: float) -> int:
    """How many records hold the first ``fraction`` of the log's events (with the item upserts among them)."""
    want = math.ceil(fraction * sum(1 for r in records if r.topic != "items"))
    seen = 0
    for i, record in enumerate(records):
        if record.topic != "items":
            seen += 1
            if seen >= want:
                return i + 1
    return len(records)


def discovery_metrics(ranks: Sequence[int | None], discoveries: Sequence[bool]) -> MetricSums:
    sums = MetricSums()
    for rank, is_new in zip(ranks, discoveries, strict=True):
        if is_new:
            sums.add(rank)
    return sums


def halves(ranks: Sequence[int | None], discoveries: Sequence[bool]) -> dict[str, dict[str, float]]:
    """Recall/NDCG/MRR over the first and the second half of the scored discovery events (the odd one: second)."""
    found = [r for r, is_new in zip(ranks, discoveries, strict=True) if is_new]
    middle = len(found) // 2
    out: dict[str, dict[str, float]] = {}
    for part, part_ranks in (("first_half", found[:middle]), ("second_half", found[middle:])):
        sums = MetricSums()
        for rank in part_ranks:
            sums.add(rank)
        out[part] = sums.means() | {"scored": sums.n}
    return out


def _choose(name: str, grid_results: list[_Result], stop: int, records: Sequence[Any]) -> dict[str, Any]:
    """The tuning entry of one system: every grid point's prefix score and the best (Recall, then NDCG; first wins)."""
    rows: list[dict[str, Any]] = []
    best: tuple[float, float] | None = None
    chosen: Any = None
    for result in grid_results:
        m = discovery_metrics(result.ranks, result.discoveries)
        means = m.means()
        timing = {"seconds": result.seconds, "cpu_seconds": result.cpu_seconds}
        rows.append(result.task.params.to_dict() | means | timing)
        key = (means["recall"], means["ndcg"])
        if best is None or key > best:
            best, chosen = key, result.task.params
    prefix = grid_results[0]
    return {
        "prefix_fraction": TUNE_PREFIX,
        "prefix_events": sum(1 for r in records[:stop] if r.topic != "items"),
        "prefix_scored": sum(prefix.discoveries),
        "metric": "recall",
        "grid": rows,
        "chosen": chosen.to_dict(),
        "chosen_params": chosen,
        "seconds": sum(r.seconds for r in grid_results),
        "cpu_seconds": sum(r.cpu_seconds for r in grid_results),
    }


def _schedule(job: _Job, names: Sequence[str], jobs: int, tune: bool) -> tuple[list[_Result], dict[str, Any]]:
    """Replay every named system (tuning the tunable ones on the prefix first); results in ``names`` order."""
    global _JOB
    grids = {n: g for n, g in tuning_grids().items() if tune and n in names and n not in job.params}
    stop = prefix_stop(job.records, TUNE_PREFIX)
    grid_tasks = {
        name: [_Task(name, len(names), p, stop, f"{name} tune {i + 1}/{len(grid)}") for i, p in enumerate(grid)]
        for name, grid in grids.items()
    }
    main = [_Task(n, pos) for pos, n in enumerate(names)]
    untuned = sorted(
        (t for t in main if t.name not in grids),
        key=lambda t: SLOW_FIRST.index(t.name) if t.name in SLOW_FIRST else len(SLOW_FIRST),
    )
    tuning: dict[str, Any] = {}
    if jobs > 1 and len(main) + sum(map(len, grid_tasks.values())) > 1:
        _JOB = job
        try:
            # one thread per child: libgomp is not fork-safe, and a forked child that enters an OpenMP
            # parallel region with more threads waits forever for the parent's pool threads
            with multiprocessing.get_context("fork").Pool(jobs, limit_threads, (1,)) as pool:
                # the slowest first, then the short tuning replays, then the rest, the tuned systems last
                slow = [t for t in untuned if t.name in SLOW_FIRST]
                pending = {t.name: pool.apply_async(_run_forked, (t,)) for t in slow}
                grid_async = {n: [pool.apply_async(_run_forked, (t,)) for t in ts] for n, ts in grid_tasks.items()}
                pending |= {t.name: pool.apply_async(_run_forked, (t,)) for t in untuned if t not in slow}
                for name, asyncs in grid_async.items():
                    tuning[name] = _choose(name, [a.get() for a in asyncs], stop, job.records)
                for t in main:
                    if t.name in grids:
                        task = _Task(t.name, t.position, tuning[t.name]["chosen_params"])
                        pending[t.name] = pool.apply_async(_run_forked, (task,))
                by_name = {name: a.get() for name, a in pending.items()}
        finally:
            _JOB = None
    else:
        for name, tasks in grid_tasks.items():
            tuning[name] = _choose(name, [_run(t, job) for t in tasks], stop, job.records)
        by_name = {
            t.name: _run(_Task(t.name, t.position, tuning[t.name]["chosen_params"]) if t.name in grids else t, job)
            for t in main
        }
    for entry in tuning.values():
        del entry["chosen_params"]
    return [by_name[n] for n in names], tuning


def evaluate(
    records: Iterable[Any],
    settings: Settings,
    names: Sequence[str] = ALL_SYSTEMS,
    k: int = 20,
    dataset: str = "",
    windows: int = DEFAULT_WINDOWS,
    progress: bool = True,
    jobs: int = 1,
    workers: int = 1,
    sync_every: int = DEFAULT_SYNC_EVENTS,
    tune: bool = True,
    params: Mapping[str, Any] | None = None,
    protocol: str = PREQUENTIAL,
    batch_size: int = 1,
) -> EvalReport:
    """Test-then-train over ``records`` (replay records in timestamp order) for every named system.

    Systems are independent, so with ``jobs > 1`` they replay in parallel processes (forked, sharing the
    records and item embeddings); each system still sees every event in order. ``workers`` runs the
    ``streamrec`` system as that many workers exchanging their model every ``sync_every`` events.
    With ``tune``, each tunable system (:func:`tuning_grids`) without given ``params`` first replays the first
    ``TUNE_PREFIX`` of the events once per grid point, and the full run uses the point with the best Recall@k.
    ``protocol="published"`` scores the lists streamrec publishes instead, replayed in micro-batches of
    ``batch_size`` as a worker applies them (:func:`_replay_published`; streamrec systems only, one worker).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    records = list(records)
    if len(set(names)) != len(names):
        raise ValueError(f"a system is named twice in {list(names)}")
    item_idx = [i for i, r in enumerate(records) if r.topic == "items"]
    embedded = embed_catalog([item_from_dict(records[i].value) for i in item_idx], settings)
    n_events = len(records) - len(item_idx)
    job = _Job(
        records,
        dict(zip(item_idx, embedded, strict=True)),
        settings,
        k,
        progress,
        workers,
        sync_every,
        dict(params or {}),
        n_events,
        batch_size,
    )
    if protocol == PUBLISHED:
        return _evaluate_published(job, names, dataset)
    t_start = time.perf_counter()
    job.list_metrics()  # the shared part, before any fork
    results, tuning = _schedule(job, names, jobs, tune)
    elapsed = time.perf_counter() - t_start
    discoveries = results[0].discoveries
    n_disc = sum(discoveries)
    window = max(1, -(-n_disc // windows))
    systems: dict[str, dict[str, Any]] = {}
    window_series: dict[str, list[float]] = {}
    training: dict[str, dict[str, Any]] = {}
    for result in results:
        name = result.task.name
        assert result.discoveries == discoveries
        score = PrequentialScore(window=window)
        for rank, is_new in zip(result.ranks, result.discoveries, strict=True):
            score.add(rank, is_new)
        systems[name] = score.summary() | {"scored_all": score.all_events.n}
        systems[name] |= halves(result.ranks, result.discoveries) | result.beyond
        stats = dict(result.stats)
        if "params" in stats:
            systems[name]["params"] = stats.pop("params")
        if "train_seconds" in stats:
            systems[name]["train_seconds"] = stats["train_seconds"]
            training[name] = stats
        window_series[name] = score.windowed_recall()
    return EvalReport(
        dataset=dataset,
        events=n_events,
        scored=n_disc,
        k=k,
        systems=systems,
        windows=window_series,
        seconds={r.task.name: r.seconds for r in results},
        cpu_seconds={r.task.name: r.cpu_seconds for r in results},
        events_per_s=n_events * len(names) / elapsed if elapsed > 0 else 0.0,
        tuning=tuning,
        training=training,
        wall_seconds=elapsed,
        jobs=jobs,
    )


def plot(report: EvalReport, path: Path) -> None:
    """Windowed discovery Recall@k over the replay, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for name, series in report.windows.items():
        x = (np.arange(len(series)) + 1) / max(len(series), 1) * 100
        ax.plot(x, series, marker="o", markersize=3, label=f"{name} ({report.systems[name]['recall']:.4f})")
    ax.set_xlabel("replay progress (% of discovery events)")
    ax.set_ylabel(f"Recall@{report.k} (discovery events, per window)")
    ax.set_title(f"Prequential Recall@{report.k} — {report.dataset}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(report: EvalReport) -> str:
    """A plain-text results table, best Recall@k first, with each half of the discovery events and training time."""
    rows = sorted(report.systems.items(), key=lambda kv: -kv[1]["recall"])
    k = report.k
    head = (
        f"{'system':20} {'Recall@' + str(k):>10} {'NDCG@' + str(k):>10} {'MRR@' + str(k):>10} "
        f"{'R 1st half':>10} {'R 2nd half':>10} {'N 2nd half':>10} {'Recall(all)':>12} {'cover@' + str(k):>9} "
        f"{'ILD':>6} {'new':>6} {'novelty':>8} {'s':>7} {'train s':>8}"
    )
    lines = [head, "-" * len(head)]
    for name, m in rows:
        train = f"{m['train_seconds']:8.1f}" if "train_seconds" in m else f"{'':8}"
        lines.append(
            f"{name:20} {m['recall']:10.4f} {m['ndcg']:10.4f} {m['mrr']:10.4f} {m['first_half']['recall']:10.4f} "
            f"{m['second_half']['recall']:10.4f} {m['second_half']['ndcg']:10.4f} {m['recall_all']:12.4f} "
            f"{m['coverage']:9.4f} {m['diversity']:6.3f} {m['new_exposure']:6.3f} {m['novelty']:8.2f} "
            f"{report.seconds[name]:7.1f} {train}"
        )
    for name, entry in report.tuning.items():
        lines.append(f"{name} tuned on the first {entry['prefix_events']} events: {entry['chosen']}")
    return "\n".join(lines)


def _metric(report: Mapping[str, Any], system: str, metric: str, part: str | None = None) -> float:
    figures = report["systems"][system]
    return float((figures[part] if part else figures)[metric])


def best_baseline(report: Mapping[str, Any], metric: str = "recall", part: str | None = None) -> str:
    """The baseline (any system but streamrec's own) with the highest ``metric`` (overall, or in ``part``)."""
    baselines = [name for name in report["systems"] if name not in STREAMREC_SYSTEMS]
    if not baselines:
        raise ValueError("the report has no baseline")
    return max(baselines, key=lambda name: _metric(report, name, metric, part))


def ratio(report: Mapping[str, Any], system: str, other: str, metric: str = "recall", part: str | None = None) -> float:
    """``system``'s ``metric`` over ``other``'s (e.g. streamrec's Recall@k over the best baseline's), from a report's
    JSON form; ``part`` is ``first_half`` or ``second_half`` for that half of the discovery events."""
    denominator = _metric(report, other, metric, part)
    return _metric(report, system, metric, part) / denominator if denominator else math.inf


def markdown_results(report: Mapping[str, Any]) -> str:
    """The results table of a report (its JSON form), best Recall@k first, then streamrec against the best baseline."""
    k = report["k"]
    systems = report["systems"]
    head = (
        f"| system | Recall@{k} | NDCG@{k} | MRR@{k} | Recall@{k} 1st half | Recall@{k} 2nd half "
        f"| NDCG@{k} 2nd half | MRR@{k} 2nd half | Recall@{k} (all events) | replay s | CPU s | training s |"
    )
    lines = [head, "|---|" + "---:|" * 11]
    cpu = report.get("cpu_seconds", {})
    for name, m in sorted(systems.items(), key=lambda kv: -kv[1]["recall"]):
        label = f"**{name}**" if name == "streamrec" else name
        train = f"{m['train_seconds']:.0f}" if "train_seconds" in m else ""
        cpu_s = f"{cpu[name]:.0f}" if name in cpu else ""
        first, second = m["first_half"], m["second_half"]
        lines.append(
            f"| {label} | {m['recall']:.4f} | {m['ndcg']:.4f} | {m['mrr']:.4f} | {first['recall']:.4f} "
            f"| {second['recall']:.4f} | {second['ndcg']:.4f} | {second['mrr']:.4f} | {m['recall_all']:.4f} "
            f"| {report['seconds'][name]:.0f} | {cpu_s} | {train} |"
        )
    if "streamrec" in systems and any(name not in STREAMREC_SYSTEMS for name in systems):
        parts = []
        for part, what in ((None, "overall"), ("second_half", "second half")):
            figures = []
            for metric, label in (("recall", "Recall"), ("ndcg", "NDCG")):
                best = best_baseline(report, metric, part)
                figures.append(f"{ratio(report, 'streamrec', best, metric, part):.2f}× {label}@{k} (`{best}`)")
            parts.append(f"{what} {' and '.join(figures)}")
        lines += ["", "streamrec against the best baseline for each figure: " + "; ".join(parts) + "."]
    return "\n".join(lines)


def markdown_tuning(report: Mapping[str, Any], column: str = "sample") -> str:
    """Each tuned system's grid as a table (one column per value of ``column``), the chosen point in bold."""
    k = report["k"]
    out: list[str] = []
    for name, entry in report.get("tuning", {}).items():
        grid = entry["grid"]
        distinct = {key: len({str(row[key]) for row in grid}) for key in entry["chosen"]}
        keys = sorted((key for key, n in distinct.items() if n > 1), key=distinct.__getitem__)  # fewest values first
        row_keys = [key for key in keys if key != column]
        columns = list(dict.fromkeys(row[column] for row in grid)) if column in keys else [None]
        table: dict[tuple[Any, ...], dict[Any, str]] = {}
        for row in grid:
            cell = f"{row['recall']:.4f}"
            if all(row[key] == entry["chosen"][key] for key in keys):
                cell = f"**{cell}**"
            where = row.get(column) if column in keys else None
            table.setdefault(tuple(row[key] for key in row_keys), {})[where] = cell
        head = [*row_keys, *(f"{column}={c}" if c is not None else f"Recall@{k}" for c in columns)]
        chosen = ", ".join(f"{key}={entry['chosen'][key]}" for key in keys)
        out += [
            f"`{name}`: Recall@{k} on the first {entry['prefix_events']:,} events ({entry['prefix_scored']:,} "
            f"discovery events scored; {len(grid)} replays, {entry['seconds']:.0f} s); chosen: {chosen}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(row_keys) + "---:|" * len(columns),
        ]
        for key_values, cells in table.items():
            out.append("| " + " | ".join([*map(str, key_values), *(cells.get(c, "") for c in columns)]) + " |")
        out.append("")
    return "\n".join(out).rstrip()


def markdown_training(report: Mapping[str, Any]) -> str:
    """One line per retrained system: retrains, events apart, training seconds in total and per retrain."""
    lines = []
    for name, t in report.get("training", {}).items():
        per = [r["seconds"] for r in t["per_retrain"]]
        lines.append(
            f"`{name}`: {t['retrains']} retrains, one every {t['retrain_every']:,} events; training "
            f"{t['train_seconds']:.0f} s in total, {t['train_seconds_mean']:.1f} s per retrain on average "
            f"(first {per[0]:.1f} s, last {per[-1]:.1f} s)"
            if per
            else f"`{name}`: never retrained (fewer than {t['retrain_every']:,} events)"
        )
    return "\n".join(lines)


def markdown_report(report: Mapping[str, Any]) -> str:
    """Results, tuning and training of one report (its JSON form), as the Markdown ``docs/evaluation.md`` shows."""
    wall = (
        f"; {report['wall_seconds'] / 60:.1f} min for tuning and all replays, {report['jobs']} at a time"
        if report.get("wall_seconds")
        else ""
    )
    parts = [
        f"{report['dataset']}: {report['events']:,} events, {report['scored']:,} discovery events scored{wall}",
        markdown_results(report),
        markdown_tuning(report),
        markdown_training(report),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def markdown_summary(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """One compact table over several reports (their JSON forms, by log name): Recall@k and NDCG@k of every
    system on every log, then streamrec against each log's best baseline (the README's quality table)."""
    names = list(dict.fromkeys(name for r in reports.values() for name in r["systems"]))
    head = ["system"] + [f"{log} {m}@{r['k']}" for log, r in reports.items() for m in ("Recall", "NDCG")]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in names:
        cells = [f"**{name}**" if name == "streamrec" else name]
        for r in reports.values():
            m = r["systems"].get(name)
            cells += [f"{m['recall']:.4f}", f"{m['ndcg']:.4f}"] if m else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for log, r in reports.items():
        if "streamrec" not in r["systems"] or all(n in STREAMREC_SYSTEMS for n in r["systems"]):
            continue
        figures = []
        for metric, label in (("recall", "Recall"), ("ndcg", "NDCG")):
            best = best_baseline(r, metric)
            figures.append(f"{ratio(r, 'streamrec', best, metric):.2f}× {label} (`{best}`)")
        if "streamrec_no_learn" in r["systems"]:
            learn = ratio(r, "streamrec", "streamrec_no_learn", "recall")
            late = ratio(r, "streamrec", "streamrec_no_learn", "recall", "second_half")
            figures.append(f"learning {learn:.2f}× the frozen ranker ({late:.2f}× over the second half)")
        notes.append(f"{log}: {', '.join(figures)}")
    if notes:
        lines += ["", "streamrec against the best baseline: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def splice(doc: str, name: str, block: str) -> str:
    """``doc`` with the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` replaced by ``block``."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    head, found, rest = doc.partition(begin)
    if not found or end not in rest:
        raise ValueError(f"no {begin} … {end} in the document")
    return f"{head}{begin}\n{block.strip()}\n{end}{rest.partition(end)[2]}"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streamrec.lab.evaluation [--docs DOC.md] [--summary SUMMARY.md] report.json ...``: each report's
    Markdown tables, printed or (``--docs``) written into DOC.md between ``<!-- begin STEM -->`` and
    ``<!-- end STEM -->`` (STEM: the JSON's file name without ``.json``); ``--summary`` writes one table of every
    report into SUMMARY.md between ``<!-- begin eval-summary -->`` and ``<!-- end eval-summary -->``."""
    import sys

    import orjson

    args = list(argv if argv is not None else sys.argv[1:])
    paths: dict[str, Path | None] = {}
    for flag in ("--docs", "--summary"):
        paths[flag] = Path(args.pop(args.index(flag) + 1)) if flag in args else None
        args = [a for a in args if a != flag]
    reports = {Path(a).stem: orjson.loads(Path(a).read_bytes()) for a in args}
    doc_path, summary_path = paths["--docs"], paths["--summary"]
    if doc_path is None and summary_path is None:
        for report in reports.values():
            print(markdown_report(report))
    if doc_path is not None:
        doc = doc_path.read_text()
        for stem, report in reports.items():
            doc = splice(doc, stem, markdown_report(report))
        doc_path.write_text(doc)
    if summary_path is not None:
        logs = {stem.removeprefix("eval-"): report for stem, report in reports.items()}
        summary_path.write_text(splice(summary_path.read_text(), "eval-summary", markdown_summary(logs)))


if __name__ == "__main__":
    main()
