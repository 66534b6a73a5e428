"""The page in headless Chromium against fake workers that already report what today's workers do not: online
quality, ranker weights on ``/stats`` and ``/explain`` — those sections must light up (no broker needed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from streamrec.dashboard import collector as collector_module
from streamrec.dashboard.collector import Collector
from streamrec.dashboard.server import address, make_app
from streamrec.io.kafka import key_partition
from streamrec.lab.broker import free_port
from streamrec.settings import KafkaSettings, Settings
from tests.dashboard.browser import CHART_STATE, browser_paths, chrome, console_errors
from tests.dashboard.fake_worker import FakeWorker, serving

WAIT_S = 30.0
TICK_S = 0.25
PARTITIONS = list(range(6))
EXPLAIN = {
    "user_id": "u7",
    "top_categories": [{"category": "coffee", "weight": 2.5}, {"category": "yoga", "weight": 0.5}],
    "recent_items": [{"item_id": "i2", "ts": 1_700_000_000.0, "type": "purchase"}],
    "items": [{"item_id": "i1", "score": 1.5, "contributions": {"category": 1.2, "price": -0.3, "sim_long": 0.6}}],
}


async def read(kafka: KafkaSettings, user_id: str) -> dict[str, Any] | None:
    items = [
        {"item_id": "i1", "score": 1.5, "reasons": ["from a category you like"]},
        {"item_id": "i3", "score": 0.9, "reasons": ["popular right now"]},
    ]
    return {"user_id": user_id, "kind": "behaviour", "items": items, "model_version": "fusion@9", "event_ts": 1.0}


class Running:
    """A fake worker and the dashboard on an event loop in a thread, the worker's figures growing every tick."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stack = AsyncExitStack()
        self.worker = FakeWorker(explain=EXPLAIN, stats={"assigned_partitions": PARTITIONS})
        self.settings = Settings.of(dashboard_port=free_port())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT_S)

    async def _start(self) -> None:
        await self.stack.enter_async_context(serving(self.worker))
        self.settings = self.settings.replace(dashboard_workers=self.worker.url)
        collector = Collector(self.settings, follow_topics=False)
        collector.read_recommendation = read
        collector.follower.partitions[self.settings.kafka.topic("events")] = PARTITIONS
        collector.catalogue.add(b'{"item_id": "i1", "title": "Espresso beans", "category": "coffee"}')
        runner = web.AppRunner(make_app(self.settings, collector), access_log=None)
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", self.settings.web.dashboard_port).start()
        task = asyncio.ensure_future(self._tick())
        self.stack.callback(task.cancel)

    async def _tick(self) -> None:
        n = 0
        while True:
            n += 1
            w = self.worker
            w.events += 25
            w.lag = {0: n % 3, 1: 0}
            for _ in range(25):
                w.latency.observe(8.0 + n % 20)
            scored = 10 * n
            w.stats.update(
                online_quality={"k": 20, "scored": scored, "recall": 0.2 + 0.001 * n, "ndcg": 0.1},
                ranker_weights={"sim_long": 1.0 + 0.01 * n, "category": 1.0, "price": -0.01 * n},
            )
            await asyncio.sleep(TICK_S)

    def __enter__(self) -> Running:
        self.thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)


def wait(check: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Running]]:
    browser_paths()
    monkeypatch.setattr(collector_module, "POLL_S", 0.5)
    monkeypatch.setattr(collector_module, "STATS_EVERY_S", 1.0)
    with Running() as running, chrome(tmp_path) as driver:
        driver.get(address(running.settings))
        yield driver, running


def test_quality_weights_and_explanations_light_up_when_workers_report_them(page: tuple[Any, Running]) -> None:
    from selenium.webdriver.common.by import By

    driver, running = page
    charts = wait(
        lambda: (
            (s := driver.execute_script(CHART_STATE))["chart-quality"]["points"] >= 4
            and s["chart-weights"]["points"] >= 6
            and s
        ),
        "the quality and weight charts",
    )
    assert charts["chart-quality"]["state"] == "live" and charts["chart-quality"]["drawn"]
    assert not driver.find_element(By.ID, "quality-waiting").is_displayed()
    assert "k = 20" in driver.find_element(By.ID, "quality-k").text
    overview = driver.execute_script("return window.streamrec.state.overview")
    assert overview["quality"]["available"] and overview["weights"]["source"] == "stats"
    assert set(overview["weights"]["features"]) == {"sim_long", "category", "price"}
    assert "from the workers' /stats" in driver.find_element(By.ID, "weights-source").text

    user = "u7"
    assert key_partition(user.encode(), PARTITIONS) in PARTITIONS
    driver.find_element(By.ID, "lookup-user").send_keys(user)
    driver.find_element(By.CSS_SELECTOR, "#lookup button").click()
    wait(lambda: driver.find_element(By.ID, "lookup-result").get_attribute("data-state") == "list", "the lookup")
    result = driver.find_element(By.ID, "lookup-result")
    rows = driver.find_elements(By.CSS_SELECTOR, "#user-list tbody tr")
    assert [r.get_attribute("data-item") for r in rows] == ["i1", "i3"]
    assert "Espresso beans" in rows[0].text and "coffee" in rows[0].text
    why = rows[0].find_element(By.TAG_NAME, "details")
    why.find_element(By.TAG_NAME, "summary").click()
    bars = why.find_element(By.CLASS_NAME, "why").text.split("\n")
    assert bars[:2] == ["category", "1.2"] and "price" in bars and "-0.3" in bars
    assert rows[1].find_elements(By.TAG_NAME, "details") == []  # no contributions for i3: no "why" shown
    assert "Top categories" in result.text and "coffee (2.5)" in result.text
    assert "not available from this worker version" not in result.text
    assert running.worker.explained == [user]
    assert console_errors(driver) == []
