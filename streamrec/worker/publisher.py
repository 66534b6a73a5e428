"""The worker's output path: each batch's messages as one record batch per partition, through Faust's producer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust

from streamrec.io.kafka import OutMessage, send_batched
from streamrec.worker import faust_compat


class BatchPublisher:
    """Sends each batch's output through a Faust app's producer, one record batch per partition (send_batched).

    Faust flushes this producer before it commits offsets, so a batch's events are committed only after its
    output is delivered. The previous batch's deliveries are awaited before the next batch is sent (done by
    then): a failed one raises here rather than passing unnoticed.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._in_flight: list[asyncio.Future[Any]] = []
        self._turn = asyncio.Lock()
        """Publishers (the batches, the refreshed lists) take turns in call order: what was published first is
        sent first, so a user's newest list is the last one on the topic."""

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        async with self._turn:
            await self.delivered()
            self._in_flight = await send_batched(faust_compat.raw_producer(self.app), messages)

    async def delivered(self) -> None:
        """Wait until everything published so far is delivered (raises the first failure)."""
        for delivery in self._in_flight:
            await delivery
        self._in_flight = []
