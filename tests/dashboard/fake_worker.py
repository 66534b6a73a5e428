"""A stand-in for a recommender worker's HTTP pages (``/metrics``, ``/stats``, optionally ``/explain``), rendered
with the worker's own :mod:`~streamrec.worker.telemetry`, for testing the dashboard without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from streamrec.lab.broker import free_port
from streamrec.worker.telemetry import Histogram, Metric, render


@dataclass
class FakeWorker:
    """What the fake worker reports; change the fields between polls."""

    events: int = 0
    recommendations: int = 0
    dead_letters: int = 0
    lag: dict[int, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    model_steps: int = 0
    items_indexed: int = 0
    users: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    explain: dict[str, Any] | None = None
    """The ``/explain`` reply; None: no such page (an older worker)."""
    explained: list[str] = field(default_factory=list)
    stats_reads: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return render(
            [
                Metric("streamrec_events_total", "counter", "Events.", self.events),
                Metric("streamrec_recommendations_total", "counter", "Lists.", self.recommendations),
                Metric("streamrec_dead_letters_total", "counter", "Dead letters.", self.dead_letters),
                Metric(
                    "streamrec_consumer_lag",
                    "gauge",
                    "Lag.",
                    labels={(("partition", str(p)),): float(n) for p, n in self.lag.items()},
                ),
                Metric("streamrec_event_to_recommendation_ms", "histogram", "Latency.", histogram=self.latency),
                Metric("streamrec_model_steps", "gauge", "Steps.", self.model_steps),
                Metric("streamrec_items_indexed", "gauge", "Items.", self.items_indexed),
                Metric("streamrec_users", "gauge", "Users.", self.users),
            ]
        )

    def app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text=self.metrics())

        async def stats(request: web.Request) -> web.Response:
            self.stats_reads += 1
            return web.json_response(self.stats)

        async def explain(request: web.Request) -> web.Response:
            if self.explain is None:
                raise web.HTTPNotFound()
            self.explained.append(request.query["user"])
            return web.json_response(self.explain)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/stats", stats)
        app.router.add_get("/explain", explain)
        return app


@asynccontextmanager
async def serving(*workers: FakeWorker) -> AsyncIterator[list[FakeWorker]]:
    """Serve each fake worker on its own free loopback port for the duration of the block."""
    runners = []
    try:
        for worker in workers:
            runner = web.AppRunner(worker.app(), access_log=None)
            await runner.setup()
            worker.port = free_port()
            await web.TCPSite(runner, "127.0.0.1", worker.port).start()
            runners.append(runner)
        yield list(workers)
    finally:
        for runner in runners:
            await runner.cleanup()
