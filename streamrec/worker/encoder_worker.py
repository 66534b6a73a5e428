"""The encoder worker: consumes ``items``, embeds them in micro-batches, publishes ``item-embeddings``.

A consumer group (``<app_id>-encoder``), so several encoder processes share the partitions (``streamrec
encoder`` runs ``encoder_processes`` of them: one single-threaded process per core is fastest on CPU). Each
poll takes up to ``encoder_batch_size`` items or what arrived within ``encoder_max_wait_s``; only the newest
version of an item in a batch is embedded. The model runs in a thread so heartbeats keep flowing during inference.
Offsets are committed after the embeddings are acknowledged by the broker (at-least-once).

A withdrawal (a tombstone, or ``"available": false``) is passed on to ``item-embeddings`` as it came, with nothing
to encode: the workers take the item out of their lists. A later upsert is embedded again and relists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.encoding.encoder import TextEncoder
from streamrec.io.kafka import DeadLetters, make_consumer, make_producer
from streamrec.model.events import InvalidMessage, Item, ItemWithdrawal, dumps, parse_item_record
from streamrec.settings import Settings

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
CHILD_STOP_TIMEOUT_S = 10.0


@dataclass
class EncoderStats:
    items: int = 0
    batches: int = 0
    rejected: int = 0
    withdrawn: int = 0
    encode_s: float = 0.0


def newest_records(
    records: Sequence[Any], max_bytes: int
) -> tuple[dict[str, Item | ItemWithdrawal], list[tuple[Any, str]]]:
    """The newest version of each item in a run of ``items`` records (upsert or withdrawal), and the records that
    break the contract with the reason.

    Newest by ``ts`` (a tie goes to the later record); a tombstone carries no time and always wins over what came
    before it in the run, and an upsert after it wins over it.
    """
    newest: dict[str, Item | ItemWithdrawal] = {}
    rejected: list[tuple[Any, str]] = []
    for r in records:
        try:
            item = parse_item_record(r.key, r.value, max_bytes)
        except InvalidMessage as exc:
            rejected.append((r, str(exc)))
            continue
        held = newest.get(item.item_id)
        if held is None or item.ts is None or held.ts is None or item.ts >= held.ts:
            newest[item.item_id] = item
    return newest, rejected


def withdrawal_value(withdrawal: ItemWithdrawal) -> bytes | None:
    """What goes on ``item-embeddings`` for a withdrawal: a tombstone for a tombstone, else the same record."""
    return None if withdrawal.ts is None else dumps(withdrawal.to_dict())


async def run_encoder(
    settings: Settings, stop: asyncio.Event | None = None, encoder: TextEncoder | None = None
) -> EncoderStats:
    """Run until ``stop`` is set (or SIGINT/SIGTERM when run from the CLI)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    encoder = encoder or await loop.run_in_executor(None, TextEncoder.from_settings, settings)
    items_topic = settings.kafka.topic("items")
    out_topic = settings.kafka.topic("item-embeddings")
    consumer = make_consumer(
        settings.kafka,
        items_topic,
        group_id=f"{settings.kafka.app_id}-encoder",
        max_poll_records=settings.encoder.encoder_batch_size,
    )
    producer = make_producer(settings.kafka)
    await producer.start()
    await consumer.start()

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await producer.send(topic, value, key=key)

    dead_letters = DeadLetters(settings.kafka, send)
    stats = EncoderStats()
    log.info("encoder ready on %s (model %s)", encoder.device, settings.encoder.model_name)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(
                timeout_ms=int(settings.encoder.encoder_max_wait_s * 1000),
                max_records=settings.encoder.encoder_batch_size,
            )
            if not batch:
                continue
            newest, rejected = newest_records(
                [r for records in batch.values() for r in records], settings.kafka.max_message_bytes
            )
            for r, reason in rejected:
                stats.rejected += 1
                await dead_letters.reject(items_topic, r.value, reason, r.key, r.partition, r.offset)
            items = [i for i in newest.values() if isinstance(i, Item)]
            withdrawals = [i for i in newest.values() if isinstance(i, ItemWithdrawal)]
            futures = [await producer.send(out_topic, withdrawal_value(w), key=w.item_id.encode()) for w in withdrawals]
            stats.withdrawn += len(withdrawals)
            if items:
                t0 = time.perf_counter()
                embeddings = await loop.run_in_executor(None, encoder.embed_items, items)
                stats.encode_s += time.perf_counter() - t0
                futures += [
                    await producer.send(out_topic, dumps(e.to_dict()), key=e.item.item_id.encode()) for e in embeddings
                ]
                stats.items += len(embeddings)
            if futures:
                await asyncio.gather(*futures)
            await producer.flush()
            await consumer.commit()
            stats.batches += 1
    finally:
        await consumer.stop()
        await producer.stop()
    return stats


def main(settings: Settings | None = None) -> None:
    """CLI entry: run the encoder worker until SIGINT/SIGTERM, in ``encoder_processes`` processes.

    The extra processes are spawned children running this same worker (one consumer group): they stop when
    this process stops them, or — on Linux — when it dies (parent-death signal).
    """
    settings = settings or Settings.from_env()
    ctx = multiprocessing.get_context("spawn")
    one = settings.replace(encoder_processes=1)
    children = [
        ctx.Process(target=_child, args=(one,), name=f"streamrec-encoder-{i}", daemon=True)
        for i in range(1, settings.encoder.encoder_processes)
    ]
    for child in children:
        child.start()
    try:
        _serve(one)
    finally:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(CHILD_STOP_TIMEOUT_S)
            if child.is_alive():
                child.kill()


def _serve(settings: Settings) -> None:
    """One encoder worker in this process, until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await run_encoder(settings, stop)
        log.info("encoder stopped: %d items in %d batches, %d rejected", stats.items, stats.batches, stats.rejected)

    asyncio.run(_run())


def _child(settings: Settings) -> None:
    """An extra encoder process: dies with its parent (Linux ``PR_SET_PDEATHSIG``), then serves like it."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux/glibc: the parent's stop still reaches it
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _serve(settings)
