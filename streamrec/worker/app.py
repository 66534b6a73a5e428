"""The recommender worker: a Faust app whose thin agents feed micro-batches to the core (:mod:`.worker`).

* ``events`` agent — takes whatever has arrived, up to ``batch_size`` events (:func:`~.batching.natural_batches`),
  and hands the batch to :meth:`Worker.handle_batch <streamrec.worker.worker.Worker.handle_batch>`: invalid
  events go to ``dead-letters``, the rest to the core (profiles in a changelog-backed Faust table,
  :mod:`.profile_table`; one ranker step per batch), and the refreshed top-k per user goes to
  ``recommendations`` — the batch's lists and profile changelog records as one record batch per partition.
* catalogue follower — every worker reads the whole compacted ``item-embeddings`` topic (not a consumer
  group: each worker needs every item) and upserts items into its FAISS index as they arrive (:mod:`.follow`);
  a withdrawal takes the item out of every source, and users whose last list holds it get a fresh one.
* rules follower — every worker reads the whole compacted ``rules`` topic and applies the business rules in
  force to every list; events wait until the rules are loaded.
* one model across workers — every worker publishes its ranker contribution every ``snapshot_interval_s`` to
  the compacted ``model-snapshots`` topic under its own key, follows its peers' and adds theirs into its own
  parameters (:class:`~streamrec.model.shared_model.SharedModel`); at start-up it resumes from its own last snapshot.
* ``repartition`` (off by default) — the ``events`` agent first re-keys every event by its user id onto an
  internal topic with Faust's own ``group_by`` (its producer partitions with murmur2), and the batches come from
  that topic: producers with any partitioner then work (README, "Publishing from other clients").
* the Faust workarounds it runs with (fetch wait, true highwaters for table recovery, direct message
  hand-off) are installed by :func:`streamrec.worker.faust_compat.apply`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

from streamrec.encoding.threads import limit_threads
from streamrec.io.kafka import client_kwargs
from streamrec.io.topics import load_topics
from streamrec.settings import Settings
from streamrec.worker import faust_compat
from streamrec.worker.batching import natural_batches
from streamrec.worker.profile_table import PROFILE_TABLE, ProfileTable, TableProfileStore
from streamrec.worker.telemetry import render
from streamrec.worker.worker import Worker

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
REPARTITION_NAME = "events-by-user"
"""Name of the ``group_by`` that re-keys ``events`` (``repartition``): its topic is ``<app id>-<name>-repartition``."""
PRODUCER_BATCH_BYTES = 512 * 1024
"""Per-partition produce batch: large enough that a full micro-batch's lists and profiles go out in a few produce
requests (aiokafka's 16 KiB default holds only ~10 of them; docs/performance.md, "Where the time goes")."""
PRODUCER_REQUEST_BYTES = 4 * PRODUCER_BATCH_BYTES


def faust_credentials(settings: Settings) -> Any:
    """SASL/SSL settings in Faust's terms (None for PLAINTEXT)."""
    kw = client_kwargs(settings.kafka)
    if settings.kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka.sasl_username,
            password=settings.kafka.sasl_password,
            mechanism=settings.kafka.sasl_mechanism,
            ssl_context=kw.get("ssl_context"),
        )
    if settings.kafka.security_protocol == "SSL":
        return faust.SSLCredentials(kw["ssl_context"])
    return None


def faust_app(settings: Settings, partitions: int) -> faust.App:
    """The worker's Faust app, configured and patched as it runs in production, without agents or tables
    (``benchmarks/faust_floor.py`` times this very app with an agent that does no recommender work)."""
    faust_compat.apply(settings)
    Path(settings.batching.data_dir).mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.kafka.app_id,
        broker=";".join(f"kafka://{b.strip()}" for b in settings.kafka.broker.split(",")),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=f"{settings.batching.data_dir}/{settings.kafka.app_id}-data",
        processing_guarantee="at_least_once",
        topic_replication_factor=settings.kafka.replication_factor,
        topic_partitions=partitions,
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_rebalance_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        # After a broker lost its data (the in-memory local broker restarted) the changelog restarts at offset 0
        # below what this worker already applied; Faust's check would crash the worker for good. It keeps its
        # in-memory table instead and carries on (docs/operations.md, "Broker restarts").
        recovery_consistency_check=False,
        web_enabled=True,
        web_bind=settings.web.web_host,
        web_host=settings.web.web_host,
        web_port=settings.web.web_port,
        producer_linger_ms=1,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_max_request_size=PRODUCER_REQUEST_BYTES,
    )


def repartition_topic(settings: Settings) -> str:
    """The internal topic ``repartition`` re-keys ``events`` onto (Faust's ``<app id>-<name>-repartition``)."""
    return f"{settings.kafka.app_id}-{REPARTITION_NAME}-repartition"


def create_app(settings: Settings | None = None, with_query_encoder: bool = True) -> tuple[faust.App, Worker]:
    """Build the Faust app and its worker state from settings."""
    settings = settings or Settings.from_env()
    limit_threads(settings.encoder.torch_threads)
    specs = load_topics()
    partitions = specs["events"].partitions
    app = faust_app(settings, partitions)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(settings.kafka.topic("events"), **raw)
    rekeyed = None
    if settings.batching.repartition:
        # created by Faust when the agent starts, partitioned like events (the profile table follows it)
        rekeyed = app.topic(
            repartition_topic(settings), internal=True, partitions=partitions, config=specs["events"].config, **raw
        )
    worker = Worker(
        settings,
        app,
        with_query_encoder,
        partitions=partitions,
        source_topic=rekeyed.get_topic_name() if rekeyed is not None else None,
    )
    table = app.tables.add(
        ProfileTable(
            app,
            name=PROFILE_TABLE,
            beacon=app.tables.beacon,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
        )
    )
    store = TableProfileStore(table, table.changelog_topic.get_topic_name())

    @app.agent(events_topic, name="events")
    async def on_events(stream: Any) -> None:
        if rekeyed is not None:
            stream = stream.group_by(worker.repartition_key(stream), name=REPARTITION_NAME, topic=rekeyed)
        async for batch in natural_batches(stream, settings.batching.batch_size):
            await worker.handle_batch(batch, store)

    @app.task
    async def on_start() -> None:
        await worker.follow_catalog()

    @app.task
    async def follow_models() -> None:
        await worker.restore_model()

    @app.task
    async def follow_item_updates() -> None:
        await worker.follow_item_updates()

    @app.task
    async def follow_rules() -> None:
        await worker.follow_rules()

    @app.task
    async def refresh_withdrawn() -> None:
        await worker.refresh_withdrawn(store)

    @app.timer(settings.batching.snapshot_interval_s)
    async def snapshot() -> None:
        await worker.sync_model()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.text(render(worker.metrics(table)), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/stats")
    async def stats_page(web: Any, request: Any) -> Any:
        return web.json(worker.stats_dict(table))

    @app.page("/explain")
    async def explain_page(web: Any, request: Any) -> Any:
        status, body = await worker.explain(request.query.get("user", ""), table)
        return web.json(body, status=status)

    return app, worker


def run_worker(settings: Settings | None = None, loglevel: str = "info") -> None:
    """Run the recommender worker until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    # Faust's terminal spinner sets the root logger to DEBUG, so every debug line of aiokafka is formatted
    # and dropped, which costs the worker's event loop real time under load (docs/performance.md). Logs need
    # no spinner.
    worker.spinner = None
    worker.execute_from_commandline()
