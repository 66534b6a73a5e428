"""natural_batches on an in-process fake of a Faust stream: batch boundaries, acks and errors (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from streamrec.worker.batching import natural_batches

IDLE_S = 0.2
"""natural_batches' idle wait in these tests: long against an in-process hand-over, short for a test."""
SOON_S = 0.01
"""A gap well within IDLE_S."""
LATE_S = 4 * IDLE_S
"""A gap well beyond IDLE_S."""


@dataclass(frozen=True)
class Gap:
    """The fake stream pauses; ``buffered``: Faust's channel holds the next event meanwhile (it is on its way)."""

    seconds: float
    buffered: bool


class Broken:
    """The fake stream raises here."""


class FakeChannel:
    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream

    def empty(self) -> bool:
        return not self.stream.buffered


class FakeStream:
    """What natural_batches uses of a Faust stream: ``enable_acks``, ``events()``, ``channel.empty()``, ``ack()``.

    ``events()`` plays a script of events (strings), :class:`Gap` pauses and :class:`Broken`, then waits for
    more (a live stream does not end). The channel is non-empty while scripted events are ready to be taken
    and during a ``buffered`` gap.
    """

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.enable_acks = True
        self.buffered = any(isinstance(s, str) for s in script[:1])
        self.log: list[str] = []
        self.acked: list[str] = []

    async def events(self) -> AsyncIterator[str]:
        for i, step in enumerate(self.script):
            rest = self.script[i + 1 :]
            if isinstance(step, Gap):
                self.buffered = step.buffered
                await asyncio.sleep(step.seconds)
                self.buffered = bool(rest) and isinstance(rest[0], str)
            elif isinstance(step, Broken):
                raise RuntimeError("the stream broke")
            else:
                self.buffered = bool(rest) and isinstance(rest[0], str)
                yield step
        await asyncio.Event().wait()

    async def ack(self, event: str) -> None:
        self.acked.append(event)
        self.log.append(f"ack {event}")

    @property
    def channel(self) -> FakeChannel:
        return FakeChannel(self)


async def take(stream: FakeStream, max_size: int, batches: int, work_s: float = 0.0) -> list[list[str]]:
    """The first ``batches`` batches; each is 'processed' for ``work_s`` (the events it holds must stay unacked)."""
    out: list[list[str]] = []
    async for batch in natural_batches(stream, max_size, IDLE_S):
        assert stream.enable_acks is False  # Faust must not ack events one by one while batching
        assert not set(batch) & set(stream.acked), "an event was acked before its batch was processed"
        await asyncio.sleep(work_s)
        assert not set(batch) & set(stream.acked), "an event was acked while its batch was being processed"
        stream.log.append(f"done {','.join(batch)}")
        out.append(batch)
        if len(out) == batches:
            break
    return out


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10 * LATE_S))


def test_a_backlog_goes_out_in_full_batches_then_the_rest() -> None:
    stream = FakeStream([f"e{i}" for i in range(10)])
    assert run(take(stream, 4, 3)) == [["e0", "e1", "e2", "e3"], ["e4", "e5", "e6", "e7"], ["e8", "e9"]]
    assert stream.enable_acks is True  # restored when the batching stops


def test_trickling_events_go_out_when_nothing_more_arrives_within_the_idle_wait() -> None:
    stream = FakeStream(
        [
            "a",
            Gap(SOON_S, buffered=True),  # the next event is on its way: wait for it (within IDLE_S)
            "b",
            Gap(LATE_S, buffered=True),  # on its way, but later than IDLE_S: [a, b] goes out meanwhile
            "c",
            Gap(SOON_S, buffered=False),  # nothing buffered: [c] goes out at once, even though d is close
            "d",
        ]
    )
    assert run(take(stream, 8, 3)) == [["a", "b"], ["c"], ["d"]]


def test_each_batch_is_acked_only_after_it_was_processed() -> None:
    stream = FakeStream(["a", "b", "c", Gap(LATE_S, buffered=False), "d", "e"])
    assert run(take(stream, 2, 3, work_s=SOON_S)) == [["a", "b"], ["c"], ["d", "e"]]
    assert stream.log == ["done a,b", "ack a", "ack b", "done c", "ack c", "done d,e"]
    # the last batch is acked when the consumer asks for the next one, which it did not


def test_an_error_from_the_stream_is_raised_to_the_consumer() -> None:
    stream = FakeStream(["a", Gap(SOON_S, buffered=False), "b", Broken()])
    batches: list[list[str]] = []

    async def consume() -> None:
        async for batch in natural_batches(stream, 4, IDLE_S):
            batches.append(batch)

    with pytest.raises(RuntimeError, match="the stream broke"):
        run(consume())
    assert batches == [["a"]]  # "b" was in hand when the stream broke: never handed on, never acked
    assert stream.acked == ["a"] and stream.enable_acks is True
