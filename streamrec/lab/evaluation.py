"""Prequential (test-then-train) evaluation on a replayed log, in process, no broker.

For every item event, each system is first asked for the top-k list it would publish for that user at
that moment; the list is scored against the event's item; only then does the system learn from the event.
``streamrec`` here is the very :class:`~streamrec.model.recommender.Recommender` the Faust agents run, with a
dict in place of the Faust table. Primary metrics count *discovery* events (the user's first interaction
with that item); all events are reported as a secondary metric. Beside accuracy, every system's scored lists are
measured for catalogue coverage, intra-list diversity, new-item exposure and novelty (:mod:`.list_metrics`).

With ``workers > 1`` streamrec runs as that many workers would in a deployment
(:class:`ShardedStreamrecSystem`): each user's events go to the worker holding the user's partition (Kafka's
key hash), each worker has its own catalogue index, co-visitation, popularity and profiles, and the workers'
rankers are kept one model by exchanging contributions with :class:`~streamrec.model.shared_model.SharedModel`.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamrec.encoding.threads import limit_threads
from streamrec.lab.baselines import CooccurrenceBaseline, OnlineMFBaseline, PopularityBaseline, TextOnlyBaseline
from streamrec.lab.list_metrics import ItemVectors, ListMetrics
from streamrec.model.events import HIDE, ITEM_EVENT_TYPES, Event, Item, ItemEmbedding, event_from_dict, item_from_dict
from streamrec.model.metrics import PrequentialScore, hit_rank
from streamrec.model.profiles import DictProfileStore, UserProfile
from streamrec.model.recommender import Recommender
from streamrec.model.shared_model import SharedModel
from streamrec.settings import Settings

DEFAULT_WINDOWS = 20
DEFAULT_SYNC_EVENTS = 1_000
"""Events between model exchanges of simulated workers: the deployed workers exchange every
``snapshot_interval_s`` (10 s), in which a worker under load applies a few thousand events."""
ALL_SYSTEMS = ("streamrec", "streamrec_no_learn", "popularity", "cooccurrence", "online_mf", "text_only")


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


def make_systems(
    settings: Settings, names: Sequence[str], workers: int = 1, sync_every: int = DEFAULT_SYNC_EVENTS
) -> list[System]:
    factories: dict[str, Any] = {
        "streamrec": lambda: (
            ShardedStreamrecSystem(settings, workers, sync_every) if workers > 1 else StreamrecSystem(settings)
        ),
        "streamrec_no_learn": lambda: StreamrecSystem(settings.replace(learn=False), "streamrec_no_learn"),
        "popularity": lambda: PopularityBaseline(settings),
        "cooccurrence": lambda: CooccurrenceBaseline(settings),
        "online_mf": lambda: OnlineMFBaseline(settings),
        "text_only": lambda: TextOnlyBaseline(settings),
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
    systems: dict[str, dict[str, float]]
    windows: dict[str, list[float]]
    seconds: dict[str, float]
    events_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "events": self.events,
            "scored": self.scored,
            "k": self.k,
            "systems": self.systems,
            "windows": self.windows,
            "seconds": self.seconds,
            "events_per_s": self.events_per_s,
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


_JOB: _Job | None = None


def _replay(
    system: System, job: _Job, position: int = 0
) -> tuple[list[int | None], list[bool], float, dict[str, float]]:
    """Test-then-train one system over the log: ranks of scored events, whether each was a discovery, seconds, and
    the beyond-accuracy metrics of its lists."""
    from tqdm import tqdm

    lists = job.list_metrics()
    seen: set[tuple[str, str]] = set()
    ranks: list[int | None] = []
    discoveries: list[bool] = []
    t0 = time.perf_counter()
    bar = tqdm(
        job.records,
        desc=f"{system.name:20}",
        unit="rec",
        disable=not job.progress,
        position=position,
        mininterval=2.0,
        leave=True,
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


def _replay_named(args: tuple[str, int]) -> tuple[str, list[int | None], list[bool], float, dict[str, float]]:
    name, position = args
    assert _JOB is not None
    [system] = make_systems(_JOB.settings, [name], _JOB.workers, _JOB.sync_every)
    return (name, *_replay(system, _JOB, position))


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
) -> EvalReport:
    """Test-then-train over ``records`` (replay records in timestamp order) for every named system.

    Systems are independent, so with ``jobs > 1`` they replay in parallel processes (forked, sharing the
    records and item embeddings); each system still sees every event in order. ``workers`` runs the
    ``streamrec`` system as that many workers exchanging their model every ``sync_every`` events.
    """
    global _JOB
    records = list(records)
    item_idx = [i for i, r in enumerate(records) if r.topic == "items"]
    embedded = embed_catalog([item_from_dict(records[i].value) for i in item_idx], settings)
    job = _Job(records, dict(zip(item_idx, embedded, strict=True)), settings, k, progress, workers, sync_every)
    t_start = time.perf_counter()
    tasks = [(name, pos) for pos, name in enumerate(names)]
    job.list_metrics()  # the shared part, before any fork
    if jobs > 1 and len(names) > 1:
        _JOB = job
        try:
            # one thread per child: libgomp is not fork-safe, and a forked child that enters an OpenMP
            # parallel region with more threads waits forever for the parent's pool threads
            with multiprocessing.get_context("fork").Pool(min(jobs, len(names)), limit_threads, (1,)) as pool:
                results = pool.map(_replay_named, tasks, chunksize=1)
        finally:
            _JOB = None
    else:
        results = [
            (name, *_replay(system, job, pos))
            for (name, pos), system in zip(tasks, make_systems(settings, names, workers, sync_every), strict=True)
        ]
    elapsed = time.perf_counter() - t_start
    discoveries = results[0][2]
    n_disc = sum(discoveries)
    window = max(1, -(-n_disc // windows))
    scores: dict[str, PrequentialScore] = {}
    for name, ranks, disc, _, _ in results:
        assert disc == discoveries
        score = scores[name] = PrequentialScore(window=window)
        for rank, is_new in zip(ranks, disc, strict=True):
            score.add(rank, is_new)
    n_events = len(records) - len(item_idx)
    return EvalReport(
        dataset=dataset,
        events=n_events,
        scored=n_disc,
        k=k,
        systems={
            name: scores[name].summary() | {"scored_all": scores[name].all_events.n} | beyond
            for name, _, _, _, beyond in results
        },
        windows={name: s.windowed_recall() for name, s in scores.items()},
        seconds={name: secs for name, _, _, secs, _ in results},
        events_per_s=n_events * len(names) / elapsed if elapsed > 0 else 0.0,
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
    """A plain-text results table, best Recall@k first."""
    rows = sorted(report.systems.items(), key=lambda kv: -kv[1]["recall"])
    k = report.k
    head = (
        f"{'system':20} {'Recall@' + str(k):>10} {'NDCG@' + str(k):>10} {'MRR@' + str(k):>10} "
        f"{'Recall(all)':>12} {'cover@' + str(k):>9} {'ILD':>6} {'new':>6} {'novelty':>8} {'s':>7}"
    )
    lines = [head, "-" * len(head)]
    for name, m in rows:
        lines.append(
            f"{name:20} {m['recall']:10.4f} {m['ndcg']:10.4f} {m['mrr']:10.4f} {m['recall_all']:12.4f} "
            f"{m['coverage']:9.4f} {m['diversity']:6.3f} {m['new_exposure']:6.3f} {m['novelty']:8.2f} "
            f"{report.seconds[name]:7.1f}"
        )
    return "\n".join(lines)
