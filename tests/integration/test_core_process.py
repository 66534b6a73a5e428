"""A worker whose core process dies stops (non-zero) instead of holding partitions it can no longer serve."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, worker_stats
from streamrec.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_worker_stops_when_its_core_process_is_killed(tmp_path: Path) -> None:
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        settings = Settings.of(
            broker=broker.url, web_port=free_port(), data_dir=str(tmp_path / "d"), snapshot_interval_s=1.0
        )
        asyncio.run(apply_topics(settings.kafka))
        worker = Service("worker", ["worker", "--loglevel", "warning"], settings, tmp_path).start()
        try:
            deadline = time.monotonic() + 120
            stats = None
            while not (stats and stats.get("core_pid")):
                assert worker.alive and time.monotonic() < deadline, worker.tail(40)
                stats = asyncio.run(worker_stats(settings))
                time.sleep(0.3)
            assert stats["core_pid"] != worker.process.pid
            os.kill(stats["core_pid"], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while worker.alive and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not worker.alive, worker.tail(40)
            assert worker.process.poll() not in (None, 0)
            assert "the core process is gone" in worker.tail(200)
        finally:
            worker.stop()
