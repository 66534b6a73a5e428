"""The worker's one boundary with Faust, mode and aiokafka internals: every private name streamrec touches is here.

:func:`apply` installs the three workarounds the worker runs with (fetch wait, true highwaters, message
hand-off); :func:`raw_producer` and :func:`committed_offset` read two private attributes for it. Nothing else
in streamrec uses a private name of those libraries.

Written against faust-streaming :data:`FAUST_VERSION` (the version ``pyproject.toml`` pins). :data:`RELIANCES`
declares every attribute patched or read, why, and where the upstream code is; :func:`problems` checks them
against the installed libraries, and ``tests/worker/test_faust_compat.py`` fails on a version bump or a
missing attribute with a message that says which workaround to re-check.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from streamrec.io.kafka import true_end_offsets
from streamrec.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

FAUST_DISTRIBUTION = "faust-streaming"
FAUST_VERSION = "0.15.3"
"""The faust-streaming release every workaround here was written and checked against."""
ORIGINAL_PREFIX = "_streamrec_original_"
"""A patched method's original is kept on its class under this prefix + its name (so patching is idempotent)."""

FETCH_WAIT = "fetch wait (patch_fetch_wait)"
TRUE_HIGHWATERS = "true highwaters (patch_true_highwaters)"
MESSAGE_HANDOFF = "message hand-off (patch_message_handoff)"
RAW_PRODUCER = "batched output (raw_producer)"
COMMITTED_OFFSET = "offset-gap filling (committed_offset)"
MONOTONIC_REPLAY = "monotonic changelog replay (profile_table.ProfileTable)"


def installed_version() -> str:
    """The installed faust-streaming version."""
    return importlib.metadata.version(FAUST_DISTRIBUTION)


def apply(settings: Settings) -> None:
    """Install every workaround the worker needs into Faust's aiokafka driver (idempotent)."""
    if installed_version() != FAUST_VERSION:
        log.warning(
            "faust-streaming %s installed, workarounds written for %s: see streamrec/worker/faust_compat.py",
            installed_version(),
            FAUST_VERSION,
        )
    patch_fetch_wait(settings.kafka.fetch_max_wait_ms)
    patch_message_handoff()
    patch_true_highwaters(settings.kafka)


def raw_producer(app: faust.App) -> AIOKafkaProducer:
    """The started aiokafka producer under a Faust app's producer (for record batches: ``send_batched``).

    Faust flushes this very producer before it commits offsets, so what goes through it is delivered before
    the events that caused it are committed.
    """
    producer: AIOKafkaProducer = app.producer._ensure_producer()
    return producer


def committed_offset(app: faust.App, tp: Any) -> int | None:
    """Faust's committed offset for ``tp`` (a Faust ``TP``), where its delivery resumes; None if it knows none."""
    committed: Mapping[Any, int | None] = getattr(app.consumer, "_committed_offset", {})
    return committed.get(tp)


def _patch_method(cls: Any, name: str, wrap: Callable[[Any], Any]) -> None:
    """Replace ``cls.name`` with ``wrap(original)``; idempotent: patching again wraps Faust's original, not ours."""
    saved = ORIGINAL_PREFIX + name
    original = getattr(cls, saved, getattr(cls, name))
    setattr(cls, saved, original)
    setattr(cls, name, wrap(original))


def patch_fetch_wait(wait_ms: int) -> None:
    """Faust hard-codes a 1,500 ms fetch wait, which makes idle-to-busy wake-ups slow; use ours."""

    def wrap(original: Any) -> Any:
        def create(self: Any, transport: Any) -> Any:
            consumer = original(self, transport)
            consumer._fetch_max_wait_ms = wait_ms  # read by AIOKafkaConsumer.start() when it builds its Fetcher
            return consumer

        return create

    _patch_method(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", wrap)


def patch_true_highwaters(kafka: KafkaSettings) -> None:
    """Make Faust's table recovery read each changelog partition to its true end, not the reported one.

    Recovery replays a changelog up to ``highwater − 1`` from the consumer's end offsets. The local broker
    reports the first offset of the last record batch + 1, so the rest of that batch — the newest state of
    some users — was never applied (a user off by one after a restart). The end offsets are corrected with
    :func:`~streamrec.io.kafka.true_end_offsets` (one short fetch per changelog partition per recovery;
    against Apache Kafka it finds nothing to correct).
    """

    def wrap(original: Any) -> Any:
        async def _highwaters(self: Any, partitions: Any) -> Any:
            reported = await original(self, partitions)
            if self.consumer.in_transaction:
                return reported
            return await true_end_offsets(kafka, reported)

        return _highwaters

    _patch_method(faust_aiokafka.AIOKafkaConsumerThread, "_highwaters", wrap)


def patch_message_handoff() -> None:
    """Hand each fetched message to the streams directly while flow is running (Faust races four tasks per message).

    Faust's fetch loop delivers every message with ``wait_first(callback(message), suspend_flow.wait())``,
    which creates four tasks and an ``asyncio.wait`` per message, a large share of a do-nothing agent's time
    (docs/decisions.md, "Faust internals behind one boundary"). The race only matters while a rebalance
    suspends flow, so the direct path is taken only when flow is not suspended and the consumer is neither
    stopping nor crashed; every other call goes through Faust's own ``wait_first``.
    """

    def wrap(original: Any) -> Any:
        async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
            if (
                len(coros) == 2
                and timeout is None
                and getattr(getattr(coros[1], "cr_frame", None), "f_locals", {}).get("self") is self.suspend_flow
                and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())
            ):
                coros[1].close()
                return WaitResults([coros[0]], [await coros[0]], False)
            return await original(self, *coros, timeout=timeout)

        return wait_first

    _patch_method(faust_aiokafka.Consumer, "wait_first", wrap)


# --- what the workarounds rely on, checked by tests/worker/test_faust_compat.py ------------------------------


class Probe(NamedTuple):
    """Objects of the installed libraries to look for the relied-on attributes in (nothing is started)."""

    consumer: Any
    """A Faust aiokafka-driver ``Consumer`` (instance attributes such as ``_committed_offset``)."""


def probe() -> Probe:
    """Build the probe objects: an unstarted Faust app's consumer (no broker, no event loop, no files)."""
    app = faust.App("streamrec-faust-compat-probe", store="memory://", web_enabled=False)
    return Probe(app.consumer)


def _original(cls: type, name: str) -> Any:
    """``cls.name`` as the library defines it (before any patch of ours)."""
    return getattr(cls, ORIGINAL_PREFIX + name, getattr(cls, name, None))


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


@dataclass(frozen=True)
class Reliance:
    """One attribute of faust/mode/aiokafka that a workaround patches or reads, and how to tell it is still there."""

    attribute: str
    """Where it lives, as the upstream code names it."""
    workaround: str
    why: str
    upstream: str
    """The upstream file and function to re-read when this breaks."""
    holds: Callable[[Probe], bool]
    """True when the attribute is there and still looks as the workaround expects."""


RELIANCES: tuple[Reliance, ...] = (
    Reliance(
        "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer (method, patched)",
        FETCH_WAIT,
        "Faust builds the worker's AIOKafkaConsumer here with a hard-coded 1,500 ms fetch wait; the patch lowers it "
        "to STREAMREC_FETCH_MAX_WAIT_MS (the fetch wait bounds the idle-to-busy wake-up time).",
        "faust/transport/drivers/aiokafka.py: AIOKafkaConsumerThread._create_worker_consumer",
        lambda p: callable(_original(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer")),
    ),
    Reliance(
        "aiokafka.AIOKafkaConsumer._fetch_max_wait_ms (instance attribute, written)",
        FETCH_WAIT,
        "The patch sets it after construction; it only works while AIOKafkaConsumer.__init__ stores the fetch wait "
        "there and AIOKafkaConsumer.start() reads it when it builds its Fetcher.",
        "aiokafka/consumer/consumer.py: AIOKafkaConsumer.__init__ and AIOKafkaConsumer.start",
        lambda p: (
            "self._fetch_max_wait_ms" in _source(AIOKafkaConsumer.__init__)
            and "self._fetch_max_wait_ms" in _source(AIOKafkaConsumer.start)
        ),
    ),
    Reliance(
        "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._highwaters (coroutine method, patched)",
        TRUE_HIGHWATERS,
        "Table recovery replays changelogs up to these end offsets; the local broker reports them one record "
        "batch short, so recovery lost users' newest state. The patch corrects them with true_end_offsets.",
        "faust/transport/drivers/aiokafka.py: AIOKafkaConsumerThread._highwaters (called by highwaters())",
        lambda p: (
            inspect.iscoroutinefunction(_original(faust_aiokafka.AIOKafkaConsumerThread, "_highwaters"))
            and "self._highwaters" in _source(faust_aiokafka.AIOKafkaConsumerThread.highwaters)
        ),
    ),
    Reliance(
        "faust.transport.consumer.Consumer.in_transaction (attribute, read)",
        TRUE_HIGHWATERS,
        "With transactions Faust reads last stable offsets instead of end offsets; the patch leaves those alone.",
        "faust/transport/consumer.py: Consumer.__init__",
        lambda p: isinstance(getattr(p.consumer, "in_transaction", None), bool),
    ),
    Reliance(
        "faust.transport.drivers.aiokafka.Consumer.wait_first (mode Service method, patched)",
        MESSAGE_HANDOFF,
        "Faust's fetch loop races every message's callback against suspend_flow.wait() through wait_first "
        "(four tasks and an asyncio.wait per message, which caps a worker's throughput); the patch awaits the "
        "callback directly while flow runs.",
        "mode/services.py: Service.wait_first; faust/transport/consumer.py: Consumer._drain_messages",
        lambda p: inspect.iscoroutinefunction(_original(faust_aiokafka.Consumer, "wait_first")),
    ),
    Reliance(
        "faust.transport.consumer.Consumer._drain_messages (calls wait_first(callback(message), "
        "self.suspend_flow.wait()))",
        MESSAGE_HANDOFF,
        "The patch recognises exactly this call (two coroutines, the second suspend_flow.wait()); if the fetch "
        "loop calls it differently the patch never takes its fast path (slower, still correct).",
        "faust/transport/consumer.py: Consumer._drain_messages",
        lambda p: (
            "self.wait_first(" in _source(faust_aiokafka.Consumer._drain_messages)
            and "self.suspend_flow.wait()" in _source(faust_aiokafka.Consumer._drain_messages)
        ),
    ),
    Reliance(
        "faust.transport.consumer.Consumer.suspend_flow (asyncio.Event, read)",
        MESSAGE_HANDOFF,
        "The patch tells the suspend_flow.wait() coroutine by its frame's 'self' and takes the direct path only "
        "while the event is clear (flow running).",
        "faust/transport/consumer.py: Consumer.__init__ (suspend_flow = Event())",
        lambda p: (
            isinstance(getattr(p.consumer, "suspend_flow", None), asyncio.Event)
            and inspect.iscoroutinefunction(asyncio.Event.wait)
        ),
    ),
    Reliance(
        "mode.services.Service._stopped and ._crashed (events, read)",
        MESSAGE_HANDOFF,
        "A stopping or crashed consumer must go through Faust's own wait_first, which lets shutdown interrupt "
        "the callback.",
        "mode/services.py: Service.__init__",
        lambda p: (
            callable(getattr(getattr(p.consumer, "_stopped", None), "is_set", None))
            and callable(getattr(getattr(p.consumer, "_crashed", None), "is_set", None))
        ),
    ),
    Reliance(
        "mode.services.WaitResults (fields done, results, stopped)",
        MESSAGE_HANDOFF,
        "The patch returns the same result wait_first would: WaitResults(done, results, stopped).",
        "mode/services.py: WaitResults",
        lambda p: WaitResults._fields == ("done", "results", "stopped"),
    ),
    Reliance(
        "faust.transport.drivers.aiokafka.Producer._ensure_producer (method, called)",
        RAW_PRODUCER,
        "The worker sends each batch's output as one record batch per partition through the aiokafka producer "
        "Faust flushes before it commits offsets (output delivered before its events are committed).",
        "faust/transport/drivers/aiokafka.py: Producer._ensure_producer",
        lambda p: (
            callable(getattr(faust_aiokafka.Producer, "_ensure_producer", None))
            and all(callable(getattr(AIOKafkaProducer, n, None)) for n in ("create_batch", "send_batch"))
        ),
    ),
    Reliance(
        "faust.transport.consumer.Consumer._committed_offset (mapping TP -> offset, read)",
        COMMITTED_OFFSET,
        "After a rebalance Faust's fetch loop sometimes skips a fetch's records and commits over the hole "
        "(chaos runs: 16 events per partition never applied); the worker compares each partition's first "
        "delivery with the committed offset to find such holes and reads them back.",
        "faust/transport/consumer.py: Consumer.__init__, Consumer.on_partitions_assigned",
        lambda p: isinstance(getattr(p.consumer, "_committed_offset", None), Mapping),
    ),
    Reliance(
        "faust.tables.table.Table.apply_changelog_batch (method, overridden)",
        MONOTONIC_REPLAY,
        "ProfileTable skips replayed changelog records older than the profile in memory (a rebalance replay "
        "put older profiles over newer ones: 607 of 6,000 events lost in a chaos run).",
        "faust/tables/table.py: Table.apply_changelog_batch; faust/tables/recovery.py (its caller)",
        lambda p: callable(getattr(faust.Table, "apply_changelog_batch", None)),
    ),
)


def problems(checked: Probe | None = None) -> list[str]:
    """What no longer matches the installed libraries, each with what to re-check (empty: all as written)."""
    out: list[str] = []
    installed = installed_version()
    if installed != FAUST_VERSION:
        out.append(
            f"{FAUST_DISTRIBUTION} {installed} is installed; streamrec/worker/faust_compat.py was written for "
            f"{FAUST_VERSION}. Re-read the upstream code of every workaround in RELIANCES "
            f"({', '.join(sorted({r.workaround for r in RELIANCES}))}), re-measure it, then update FAUST_VERSION."
        )
    checked = checked or probe()
    for r in RELIANCES:
        try:
            ok = r.holds(checked)
        except Exception as exc:  # an attribute gone or changed shape: that is the finding
            log.debug("checking %s raised %r", r.attribute, exc)
            ok = False
        if not ok:
            out.append(
                f"{r.attribute} is missing or changed in {FAUST_DISTRIBUTION} {installed}: workaround "
                f"'{r.workaround}' relies on it. Why it exists: {r.why} Re-check the upstream code: {r.upstream}."
            )
    return out
