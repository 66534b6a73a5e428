"""The dashboard in a real headless Chromium against a running demo pipeline (broker, encoder, worker, dashboard).

Checks what a person would look for: the charts have data, a user with events gets their list, a dead letter
published during the test shows up with its reason; saves ``out/dashboard.png``. Also holds the Grafana board
to the metrics a live worker exports.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamrec.io.kafka import make_producer
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.demo import dashboard_url, pipeline_settings, publish_catalogue, send_live, start_pipeline
from streamrec.lab.processes import Service, worker_stats
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.settings import Settings
from tests.dashboard.browser import CHART_STATE, browser_paths, chrome, console_errors
from tests.dashboard.test_grafana import BOARD, board_queries, exported_families, unknown_metrics
from tests.integration.test_pipeline import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "out" / "dashboard.png"
ITEMS, USERS, EVENTS, RATE = 60, 12, 600, 150.0
WAIT_S = 60.0
QUALITY_WAIT_S = 90.0
"""The quality chart needs two ``/stats`` reads (every 10 s) with newly scored events between them."""
QUALITY_NUDGE_EVENTS = 3
QUALITY_POINTS = 4
"""Recall and NDCG for two poll intervals: a line on the chart, not a lone dot."""


async def stream_shop(settings: Settings, services: list[Service]) -> dict[str, Any]:
    """A small synthetic shop: the catalogue (indexed), then events at a steady rate with ts = now."""
    shop = make_shop(ITEMS, USERS, seed=settings.retrieval.seed, ts=time.time())
    events = make_events(shop, EVENTS, seed=settings.retrieval.seed)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await publish_catalogue(settings, producer, shop, services)
        for event in events:
            await send_live(producer, settings, event)
            await asyncio.sleep(1.0 / RATE)
        await producer.flush()
    finally:
        await producer.stop()
    titles = {i.item_id: i.title for i in shop.items}
    busiest = Counter(e.user_id for e in events if e.item_id is not None).most_common(1)[0][0]
    more = [e for e in make_events(shop, EVENTS, seed=settings.retrieval.seed + 1) if e.item_id is not None]
    return {"titles": titles, "user": busiest, "events": len(events), "more": more}


async def send_more(settings: Settings, events: list[Any], n: int) -> None:
    """``n`` more item events (taken from the front of ``events``), sent now."""
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for _ in range(min(n, len(events))):
            await send_live(producer, settings, events.pop(0))
        await producer.flush()
    finally:
        await producer.stop()


async def publish_bad_event(settings: Settings, marker: str) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        value = json.dumps({"user_id": "dashboard-test", "type": "like", "ts": time.time(), "item_id": marker})
        await producer.send_and_wait(settings.kafka.topic("events"), value.encode(), key=b"dashboard-test")
    finally:
        await producer.stop()


async def metrics_page(settings: Settings) -> str:
    url = f"http://{settings.web.web_host}:{settings.web.web_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[Service], dict[str, Any]]]:
    browser_paths()  # skip before starting anything
    workdir: Path = tmp_path_factory.mktemp("dashboard")
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        base = Settings.of(app_id="dash", dashboard_port=free_port(), snapshot_interval_s=1.0)
        settings = pipeline_settings(base, broker.url, workdir)
        services = asyncio.run(start_pipeline(settings, workdir))
        try:
            shop = asyncio.run(stream_shop(settings, services))
            wait_for(
                lambda: (s := asyncio.run(worker_stats(settings))) and s["events"] >= shop["events"],
                "the events to be applied",
                services,
                timeout=WAIT_S,
            )
            yield settings, services, shop
        finally:
            codes = {s.name: s.stop() for s in services}
            assert codes == {"encoder": 0, "worker": 0, "dashboard": 0}, codes


@pytest.fixture()
def driver(tmp_path: Path) -> Iterator[Any]:
    with chrome(tmp_path) as d:
        yield d


def test_the_page_shows_the_pipeline_working(demo: tuple[Settings, list[Service], dict[str, Any]], driver: Any) -> None:
    from selenium.webdriver.common.by import By

    settings, services, shop = demo
    driver.get(dashboard_url(settings))
    try:
        # the charts fill in from the workers' pages and the topics
        needed = ("chart-throughput", "chart-lag", "chart-latency-q", "chart-weights", "chart-encoder")

        def charts_ready() -> dict[str, Any] | None:
            state = driver.execute_script(CHART_STATE)
            full = all(state[c]["points"] > 0 and state[c]["drawn"] for c in needed)
            overview = driver.execute_script("return window.streamrec.state.overview")
            caught_up = overview is not None and overview["totals"]["events"] >= shop["events"]
            return state if full and caught_up and state["chart-latency-hist"]["events"] > 0 else None

        charts = wait_for(charts_ready, "every chart to have data", services, timeout=WAIT_S)
        assert charts["chart-latency-hist"]["drawn"] and charts["chart-latency-hist"]["points"] > 0
        overview = driver.execute_script("return window.streamrec.state.overview")
        assert overview["totals"]["workers_up"] == 1
        assert overview["totals"]["items_indexed"] == ITEMS

        # online quality: the page plots each /stats interval (10 s) in which the worker scored events, so a few
        # more events go out while waiting, to give the next intervals some
        def quality_shows() -> dict[str, Any] | None:
            quality = driver.execute_script(CHART_STATE)["chart-quality"]
            if quality["state"] == "live" and quality["points"] >= QUALITY_POINTS and quality["drawn"]:
                return quality
            asyncio.run(send_more(settings, shop["more"], QUALITY_NUDGE_EVENTS))
            return None

        wait_for(quality_shows, "the online quality chart", services, timeout=QUALITY_WAIT_S)
        assert not driver.find_element(By.ID, "quality-waiting").is_displayed()
        assert "since start: Recall" in driver.find_element(By.ID, "quality-k").text

        # a dead letter published now appears with its reason and its bytes
        marker = f"marker-{uuid.uuid4().hex[:8]}"
        asyncio.run(publish_bad_event(settings, marker))
        entry = wait_for(
            lambda: next(
                (li.text for li in driver.find_elements(By.CSS_SELECTOR, "#dl-recent li") if marker in li.text), None
            ),
            "the dead letter on the page",
            services,
            timeout=WAIT_S,
        )
        assert "unknown event type 'like'" in entry
        reasons = driver.find_element(By.ID, "dl-reasons").text
        assert "unknown event type 'like'" in reasons

        # a user with events gets their latest list, with titles from the catalogue
        box = driver.find_element(By.ID, "lookup-user")
        box.send_keys(shop["user"])
        driver.find_element(By.CSS_SELECTOR, "#lookup button").click()
        wait_for(
            lambda: (
                driver.find_element(By.ID, "lookup-result").get_attribute("data-state") in ("list", "none", "error")
            ),
            "the user lookup",
            services,
            timeout=WAIT_S,
        )
        result = driver.find_element(By.ID, "lookup-result")
        assert result.get_attribute("data-state") == "list", result.text
        rows = driver.find_elements(By.CSS_SELECTOR, "#user-list tbody tr")
        assert len(rows) == int(result.get_attribute("data-items")) > 0
        first = rows[0].get_attribute("data-item")
        assert shop["titles"][first] in rows[0].text
        user = driver.execute_script("return window.streamrec.state.user")
        # the worker explains the list: top categories, recent items and each item's feature contributions
        assert user["worker"] is not None and user["explain_status"] == "ok", user["explain_message"]
        assert user["explain"]["user_id"] == shop["user"] and user["explain"]["recent_items"]
        assert driver.find_elements(By.CSS_SELECTOR, "#user-list tbody tr details")  # "why this item"

        # no script errors, no blocked requests (everything is served by the dashboard itself)
        assert console_errors(driver) == []
    finally:
        SCREENSHOT.parent.mkdir(exist_ok=True)
        for _ in range(2):  # the page reflows at the new size: measure again
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1400, min(max(height, 1000), 4000))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(SCREENSHOT))


def test_a_dashboard_without_a_list_finds_the_worker_on_model_snapshots(
    demo: tuple[Settings, list[Service], dict[str, Any]], tmp_path: Path
) -> None:
    settings, services, shop = demo
    own = settings.replace(dashboard_workers="", dashboard_port=free_port())
    finder = Service("dashboard-discovery", ["dashboard"], own, tmp_path).start()
    try:

        def found() -> dict[str, Any] | None:
            overview = asyncio.run(get_json(f"{dashboard_url(own)}api/overview"))
            workers = (overview or {}).get("workers", [])
            return overview if [w["up"] for w in workers] == [True] and workers[0]["events"] >= 1 else None

        overview = wait_for(found, "the discovered worker", [*services, finder], timeout=WAIT_S)
        (worker,) = overview["workers"]
        assert overview["discovery"] == "model-snapshots"
        assert worker["url"] == f"http://127.0.0.1:{settings.web.web_port}"
        assert worker["events"] >= shop["events"]
    finally:
        assert finder.stop() == 0


async def get_json(url: str) -> dict[str, Any] | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, OSError):
        return None


def test_the_grafana_board_queries_only_what_a_live_worker_exports(
    demo: tuple[Settings, list[Service], dict[str, Any]],
) -> None:
    settings, _, _ = demo
    families = exported_families(asyncio.run(metrics_page(settings)))
    assert "streamrec_events_total" in families
    assert unknown_metrics(board_queries(json.loads(BOARD.read_text())), families) == {}
