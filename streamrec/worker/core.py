"""The worker's core: the recommender and its share of the model, served in a child process (or a thread).

A Python process runs one interpreter at a time (the GIL). In one process the Faust event loop (fetching,
delivering and producing messages) and the core (learning and ranking) take turns, so a batch takes far longer
than the core alone needs (docs/performance.md, "Before the core had its own process"). With ``core_process``
(the default) the core runs in its own process, so both work at once on two cores.

The worker talks to :class:`CoreService` only through :class:`CoreClient`, whose typed methods mirror the
service's: each call is one request (the service method itself and its arguments) and one reply over a
pipe, in order (batches stay strictly sequential). Profiles cross as the table's bytes, read before a batch
and written back after it, so the changelog-backed table stays in the Faust process. The same
:class:`CoreService` runs in a thread when ``core_process`` is off: one implementation either way.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Concatenate, ParamSpec, TypeVar

from streamrec.encoding.threads import limit_threads
from streamrec.model.events import Event, InvalidMessage, ItemWithdrawal, dumps, parse_embedding_record
from streamrec.model.itemstats import ItemUpdate, encode_updates
from streamrec.model.metrics import OnlineCounts
from streamrec.model.profiles import UserProfile, profiles_to_bytes
from streamrec.model.ranker import FEATURES
from streamrec.model.recommender import Recommender
from streamrec.model.rules import RuleSet
from streamrec.model.shared_model import SharedModel
from streamrec.settings import Settings
from streamrec.worker.memory import release_free_memory, rss_bytes

log = logging.getLogger(__name__)

ITEM_UPDATES_PER_MESSAGE = 256
"""Item updates per ``item-updates`` message (~50 KB): far below broker limits whatever the batch size."""
TRIM_AFTER_EVENTS = 256
"""Batches at least this large return their freed temporary memory to the system (see release_free_memory)."""
STOP_TIMEOUT_S = 10.0
WARM_UP_QUERY = "warm-up"
WARM_UP_USER = "streamrec-warm-up"
"""Id prefix of the made-up users :meth:`CoreService.warm_up` ranks for (never stored or published)."""

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CoreState:
    """What the worker's telemetry shows about the core, refreshed with every reply."""

    items_indexed: int = 0
    model_version: str = ""
    model_steps: int = 0
    own_steps: int = 0
    peers: tuple[str, ...] = ()
    rss_bytes: int = 0
    """Resident memory of the core's own process (0 when it runs in the worker's process)."""
    cpu_seconds: float = 0.0
    """CPU time the core's own process has used (0 when it runs in the worker's process)."""
    ranker_weights: dict[str, float] = field(default_factory=dict)
    """The fusion ranker's θ by feature."""
    online: OnlineCounts | None = None
    """Online quality: this core's scored events by list kind, discovery or repeat, and hit rank."""


@dataclass(slots=True)
class CoreBatch:
    """The effects of one batch, ready to publish."""

    applied: int
    duplicates: int
    forgotten: list[str]
    recommendations: list[tuple[bytes, bytes]]
    """(user id, list) messages for ``recommendations``."""
    profiles: dict[str, bytes | None]
    """New table value per changed user (None: deleted)."""
    item_updates: list[bytes]
    """``item-updates`` messages for the peers."""


@dataclass(slots=True)
class CatalogUpdate:
    """The outcome of applying a run of ``item-embeddings`` records."""

    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(index of the record in the run, reason) for each bad record."""
    upserted: int = 0
    visible_ms: list[float] = field(default_factory=list)
    """Item timestamp → indexed, for each upserted item (when the run is live, not the initial load)."""
    withdrawn: int = 0
    """Items withdrawn by the run (tombstones and ``"available": false``)."""
    withdrawn_ms: list[float] = field(default_factory=list)
    """Withdrawal timestamp → applied here, for each live withdrawal that carries a time (from then on no new list
    holds the item)."""
    refresh: list[str] = field(default_factory=list)
    """Users whose last list holds an item the run withdrew: they need a fresh list."""


class BytesProfileStore:
    """A :class:`~streamrec.model.profiles.ProfileStore` over the table bytes of a batch's users.

    Each profile is parsed once, on first read; what the batch wrote is serialised once, at the end.
    """

    def __init__(self, raw: dict[str, bytes | None]) -> None:
        self.raw = raw
        self.parsed: dict[str, UserProfile | None] = {}
        self.changed: dict[str, UserProfile | None] = {}

    def get(self, user_id: str) -> UserProfile | None:
        if user_id in self.changed:
            return self.changed[user_id]
        if user_id not in self.parsed:
            raw = self.raw.get(user_id)
            self.parsed[user_id] = None if raw is None else UserProfile.from_bytes(raw)
        return self.parsed[user_id]

    def put(self, profile: UserProfile) -> None:
        self.changed[profile.user_id] = profile

    def delete(self, user_id: str) -> None:
        self.changed[user_id] = None

    def changes(self) -> dict[str, bytes | None]:
        kept = [p for p in self.changed.values() if p is not None]
        records = iter(profiles_to_bytes(kept))
        return {u: None if p is None else next(records) for u, p in self.changed.items()}


class CoreService:
    """The recommender, its share of the model and what the worker asks of them (plain calls, no Kafka)."""

    def __init__(self, settings: Settings, worker_id: str, with_query_encoder: bool, own_process: bool) -> None:
        encode_queries = None
        if with_query_encoder:
            from streamrec.encoding.encoder import TextEncoder

            encode_queries = TextEncoder.from_settings(settings).encode
            encode_queries([WARM_UP_QUERY])  # the model's first call allocates its working memory: not per user
        self.settings = settings
        self.recommender = Recommender(settings, encode_queries)
        self.shared = SharedModel(self.recommender.ranker, worker_id)
        self.own_process = own_process
        self.unfrozen_events = 0
        """Events processed since the heap was last frozen (:meth:`freeze_heap`)."""

    def state(self) -> CoreState:
        rec = self.recommender
        return CoreState(
            rec.catalog.n_indexed,
            rec.ranker.version,
            rec.ranker.steps,
            self.shared.own_steps,
            tuple(sorted(self.shared.peers)),
            rss_bytes() if self.own_process else 0,
            time.process_time() if self.own_process else 0.0,
            dict(zip(FEATURES, rec.ranker.weights.tolist(), strict=True)),
            rec.online.counts(),
        )

    def process(
        self, events: Sequence[Event], positions: Sequence[tuple[int, int] | None], raw: dict[str, bytes | None]
    ) -> CoreBatch:
        """Learn from a batch and refresh its users' lists (:meth:`Recommender.process`), serialised."""
        store = BytesProfileStore(raw)
        result = self.recommender.process(events, store, positions)
        batch = CoreBatch(
            result.applied,
            result.duplicates,
            result.forgotten,
            [(rec.user_id.encode(), dumps(rec.to_dict())) for rec in result.recommendations],
            store.changes(),
            encode_updates(result.item_updates, ITEM_UPDATES_PER_MESSAGE),
        )
        if len(events) >= TRIM_AFTER_EVENTS:
            self.trim()
        self.unfrozen_events += len(events)
        every = self.settings.batching.gc_freeze_events
        if every and self.own_process and self.unfrozen_events >= every:  # never Faust's heap: it makes cycles
            self.freeze_heap()
        return batch

    def upsert_items(
        self, values: Sequence[bytes | None], live: bool, keys: Sequence[bytes | None] | None = None
    ) -> CatalogUpdate:
        """Apply ``item-embeddings`` records (values, and keys for tombstones); ``live``: after the initial load
        (items count as new). Withdrawals take the item out of every source at once and name the users whose last
        list holds it."""
        out = CatalogUpdate()
        dim = self.settings.retrieval.embedding_dim
        withdrawn: list[str] = []
        for i, value in enumerate(values):
            try:
                emb = parse_embedding_record(keys[i] if keys is not None else None, value)
            except InvalidMessage as exc:
                out.rejected.append((i, str(exc)))
                continue
            if isinstance(emb, ItemWithdrawal):
                if self.recommender.withdraw(emb.item_id, emb.ts):
                    withdrawn.append(emb.item_id)
                    if live and emb.ts is not None:
                        out.withdrawn_ms.append((time.time() - emb.ts) * 1000.0)
                continue
            if emb.vector.shape[0] != dim:
                out.rejected.append((i, f"embedding has {emb.vector.shape[0]} dimensions, this deployment uses {dim}"))
                continue
            if self.recommender.upsert_item(emb):
                out.upserted += 1
                if live:
                    out.visible_ms.append((time.time() - emb.item.ts) * 1000.0)
        out.withdrawn = len(withdrawn)
        if withdrawn and live:
            out.refresh = self.recommender.users_listing(withdrawn)
        return out

    def set_rules(self, values: dict[str, dict[str, Any]]) -> None:
        """Put these business rules (validated rule values by name) in force (:meth:`Recommender.set_rules`)."""
        self.recommender.set_rules(RuleSet.from_values(values))

    def refresh_lists(self, raw: dict[str, bytes | None]) -> list[tuple[bytes, bytes]]:
        """Fresh lists for these users from their stored profiles, nothing learned (:meth:`Recommender.refresh`)."""
        lists = self.recommender.refresh(list(raw), BytesProfileStore(raw))
        return [(rec.user_id.encode(), dumps(rec.to_dict())) for rec in lists]

    def warm_up(self, users: int) -> None:
        """Rank once for ``users`` made-up users (each with a catalogue item's vector as taste), changing nothing.

        The first rankings take the libraries' working memory (BLAS and FAISS buffers, code pages, a heap
        sized for a full batch's temporaries), which would otherwise be counted as memory per user
        (docs/performance.md, "Where the memory goes"). Nothing is learned, remembered or published; the caller
        trims the freed temporaries (the worker does before it records its memory baseline).
        """
        rec = self.recommender
        if rec.catalog.n_indexed == 0 or users <= 0:
            return
        profiles = []
        for i in range(users):
            profile = UserProfile.new(f"{WARM_UP_USER}-{i}", self.settings.retrieval.embedding_dim)
            profile.long_term[:] = rec.catalog.vectors[i * len(rec.catalog) // users]
            profiles.append(profile)
        rec.recommend(profiles, now=rec.clock, remember=False)

    def apply_item_updates(self, updates: Sequence[ItemUpdate]) -> int:
        return self.recommender.apply_item_updates(updates)

    def explain(self, raw: bytes) -> dict[str, Any]:
        """A user's list ranked now from their stored profile, with each feature's share of every score
        (:meth:`Recommender.explain`); nothing is learned, remembered or published."""
        return self.recommender.explain(UserProfile.from_bytes(raw))

    def restore_model(self, contributions: dict[bytes, dict[str, Any]]) -> None:
        """Resume this worker's own contribution and merge every peer's (:meth:`SharedModel.restore`)."""
        self.shared.restore(contributions)

    def merge_and_snapshot(self, pending: dict[bytes, dict[str, Any]]) -> dict[str, Any]:
        """Add peers' newest contributions (never mid-step), then snapshot this worker's own."""
        for snap in pending.values():
            self.shared.merge(snap)
        return self.shared.contribution()

    def trim(self) -> None:
        """Hand freed heap back to the system, in the core's own process (in the worker's, the worker trims)."""
        if self.own_process:
            release_free_memory()

    def freeze_heap(self, collect: bool = False) -> None:
        """Take every object alive now out of the cyclic garbage collector's scans (``gc.freeze``), so no
        collection walks the core's state again; objects made later are collected as usual (``gc_freeze_events``).

        The state is freed by reference counting as before: freezing only stops the scans, which find nothing here
        (the core's structures hold no reference cycles) yet took a full collection ~0.5 s at 50,000 items.
        ``collect``: collect first (once at start-up, where the loading left garbage behind; never per batch).
        """
        if not self.settings.batching.gc_freeze_events:
            return
        if collect:
            gc.collect()
        gc.freeze()
        self.unfrozen_events = 0


def _serve(conn: Connection, settings: Settings, worker_id: str, with_query_encoder: bool) -> None:
    """The child process: answer calls until the worker closes the pipe (or dies: its end closes too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the worker stops us
    limit_threads(settings.encoder.torch_threads)
    try:
        service = CoreService(settings, worker_id, with_query_encoder, own_process=True)
        conn.send((True, None, service.state()))
    except BaseException as exc:
        conn.send((False, exc, CoreState()))
        raise
    while True:
        try:
            method, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (True, method(service, *args, **kwargs), service.state())
        except Exception as exc:
            log.exception("core call %s failed", method.__name__)
            reply = (False, exc, service.state())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class CoreError(RuntimeError):
    """The core process failed or is gone: the worker stops rather than carry on without its state."""


class CoreClient:
    """The worker's handle on its core: one typed method per :class:`CoreService` method.

    Every call runs on the core (its process, or this process's core thread) after every call made before it,
    on one thread that waits for the reply. A failed call raises :class:`CoreError`; when the core process is
    gone, ``on_gone`` is called first (the worker stops: it cannot serve its partitions without its core).
    """

    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        with_query_encoder: bool,
        on_gone: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.with_query_encoder = with_query_encoder
        self.on_gone = on_gone
        self.state = CoreState()
        self._thread = ThreadPoolExecutor(
            1,
            thread_name_prefix="streamrec-core",
            initializer=limit_threads,
            initargs=(settings.encoder.torch_threads,),
        )
        self._service: CoreService | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    # --- the core's methods -------------------------------------------------------------------------
    async def process(
        self, events: Sequence[Event], positions: Sequence[tuple[int, int] | None], raw: dict[str, bytes | None]
    ) -> CoreBatch:
        """Learn from a batch and refresh its users' lists (:meth:`CoreService.process`)."""
        return await self._run(CoreService.process, events, positions, raw)

    async def upsert_items(
        self, values: Sequence[bytes | None], live: bool, keys: Sequence[bytes | None] | None = None
    ) -> CatalogUpdate:
        """Apply ``item-embeddings`` records (:meth:`CoreService.upsert_items`)."""
        return await self._run(CoreService.upsert_items, values, live, keys)

    async def set_rules(self, values: dict[str, dict[str, Any]]) -> None:
        """Put these business rules in force (:meth:`CoreService.set_rules`)."""
        await self._run(CoreService.set_rules, values)

    async def refresh_lists(self, raw: dict[str, bytes | None]) -> list[tuple[bytes, bytes]]:
        """Fresh lists for these users, nothing learned (:meth:`CoreService.refresh_lists`)."""
        return await self._run(CoreService.refresh_lists, raw)

    async def warm_up(self, users: int) -> None:
        """Rank once for made-up users, changing nothing (:meth:`CoreService.warm_up`)."""
        await self._run(CoreService.warm_up, users)

    async def trim(self) -> None:
        """Hand the core process's freed heap back to the system (:meth:`CoreService.trim`)."""
        await self._run(CoreService.trim)

    async def freeze_heap(self, collect: bool = False) -> None:
        """Take the core's heap out of the garbage collector's scans (:meth:`CoreService.freeze_heap`)."""
        await self._run(CoreService.freeze_heap, collect)

    async def apply_item_updates(self, updates: Sequence[ItemUpdate]) -> int:
        """Fold peers' item updates into the item statistics; returns how many applied."""
        return await self._run(CoreService.apply_item_updates, updates)

    async def explain(self, raw: bytes) -> dict[str, Any]:
        """A user's list ranked now, with per-feature contributions (:meth:`CoreService.explain`)."""
        return await self._run(CoreService.explain, raw)

    async def restore_model(self, contributions: dict[bytes, dict[str, Any]]) -> None:
        """Resume this worker's contribution and merge its peers' (:meth:`CoreService.restore_model`)."""
        await self._run(CoreService.restore_model, contributions)

    async def merge_and_snapshot(self, pending: dict[bytes, dict[str, Any]]) -> dict[str, Any]:
        """Merge peers' newest contributions, then snapshot this worker's (:meth:`CoreService.merge_and_snapshot`)."""
        return await self._run(CoreService.merge_and_snapshot, pending)

    # --- running a call -----------------------------------------------------------------------------
    async def _run(self, method: Callable[Concatenate[CoreService, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``method`` on the core's service, after every call made before it."""
        try:
            result: R = await asyncio.get_running_loop().run_in_executor(self._thread, self._call, method, args, kwargs)
        except CoreError:
            if not self.alive and self.on_gone is not None:
                self.on_gone()
            raise
        return result

    def _start(self) -> None:
        if self.settings.batching.core_process:
            ctx = multiprocessing.get_context("spawn")  # never fork a process that runs Faust's threads
            ours, theirs = ctx.Pipe()
            self._process = ctx.Process(
                target=_serve,
                args=(theirs, self.settings, self.worker_id, self.with_query_encoder),
                name="streamrec-core",
                daemon=True,
            )
            self._process.start()
            theirs.close()
            self._conn = ours
            self._receive()
            log.info("core running in process %d", self._process.pid)
        else:
            self._service = CoreService(self.settings, self.worker_id, self.with_query_encoder, own_process=False)

    def _receive(self) -> Any:
        assert self._conn is not None
        try:
            ok, result, state = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise CoreError(f"the core process exited (code {self._exitcode()})") from exc
        self.state = state
        if not ok:
            raise CoreError(f"the core failed: {result!r}") from result
        return result

    @property
    def alive(self) -> bool:
        """False once the core process has exited (it never restarts: the worker must stop)."""
        return self._process is None or self._process.is_alive()

    def _call(self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._service is None and self._conn is None:
            self._start()
        if self._service is not None:
            try:
                return method(self._service, *args, **kwargs)
            except Exception as exc:
                raise CoreError(f"the core failed: {exc!r}") from exc
            finally:
                self.state = self._service.state()
        assert self._conn is not None
        try:
            self._conn.send((method, args, kwargs))
        except OSError as exc:  # the pipe broke: the process is gone
            raise CoreError(f"the core process exited (code {self._exitcode()})") from exc
        return self._receive()

    def _exitcode(self) -> int | None:
        if self._process is not None:
            self._process.join(0.5)
            return self._process.exitcode
        return None

    @property
    def pid(self) -> int | None:
        """The core process's pid (None when the core runs in the worker's process or has not started)."""
        return self._process.pid if self._process is not None else None

    def rss_bytes(self) -> int:
        """Resident memory of the core's process, as of its last reply (0: it runs in this process)."""
        return self.state.rss_bytes

    def close(self) -> None:
        """Stop the core process (it exits when its pipe closes) and the calling thread."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(STOP_TIMEOUT_S)
            if self._process.is_alive():
                self._process.kill()
            self._process = None
        self._thread.shutdown(wait=False)
