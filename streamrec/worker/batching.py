"""Micro-batches of whatever events have arrived, for the worker's ``events`` agent (:func:`natural_batches`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

BATCH_IDLE_S = 0.05
"""A held batch goes out when no further event arrives within this long (see :func:`natural_batches`)."""

_END = object()
"""Marks the end of the stream in :func:`natural_batches`' hand-over queue."""


async def natural_batches(stream: Any, max_size: int, idle_s: float = BATCH_IDLE_S) -> AsyncIterator[list[Any]]:
    """Batches of whatever events have arrived (up to ``max_size``), each acked only after it was processed.

    Never waits for a batch to fill: when the stream's buffer runs dry the batch goes out, so at low load a
    batch is an event or two (low latency) and under a backlog it is ``max_size`` (throughput) — the events
    that arrive while the core works on one batch are the next one. Faust's ``take_events`` instead waits a
    fixed window for every batch and stops buffering while a batch is processed.

    A batch is never held while waiting for an event that may not come: a rebalance suspends the stream and
    clears its buffer, then waits until every delivered event is acked — if the next event were awaited
    with unacked events in hand, the rebalance and this agent would wait for each other forever (seen in
    the chaos runs). So a pump task moves events from the stream to a small queue, and a non-empty batch
    goes out as soon as that queue is empty and nothing arrives within ``idle_s``.
    """
    enabled = stream.enable_acks
    stream.enable_acks = False  # offsets are committed only after the whole batch took effect
    handover: asyncio.Queue[Any] = asyncio.Queue(max_size)

    async def pump() -> None:
        try:
            async for event in stream.events():
                await handover.put(event)
        except BaseException as exc:  # handed to the consumer side, which re-raises it
            await handover.put(exc)
            raise
        await handover.put(_END)

    task = asyncio.ensure_future(pump())
    batch: list[Any] = []
    try:
        while True:
            if batch and handover.empty():
                if stream.channel.empty():
                    item: Any = None
                else:
                    try:
                        item = await asyncio.wait_for(handover.get(), idle_s)
                    except TimeoutError:
                        item = None
                if item is None:
                    yield batch
                    for done in batch:
                        await stream.ack(done)
                    batch = []
                    continue
            else:
                item = await handover.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            batch.append(item)
            if len(batch) >= max_size or (handover.empty() and stream.channel.empty()):
                yield batch
                for done in batch:
                    await stream.ack(done)
                batch = []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        stream.enable_acks = enabled
