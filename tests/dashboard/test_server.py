"""The dashboard's web server: the page and its vendored files, GET-only JSON, loopback names only."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from streamrec.dashboard.collector import Collector
from streamrec.dashboard.server import STATIC, make_app
from streamrec.lab.broker import free_port
from streamrec.settings import KafkaSettings, Settings
from tests.dashboard.fake_worker import FakeWorker, serving

Check = Callable[[aiohttp.ClientSession, str], Awaitable[Any]]


async def read(kafka: KafkaSettings, user_id: str) -> dict[str, Any] | None:
    items = [{"item_id": "i1", "score": 1.0, "reasons": []}]
    return {"user_id": user_id, "kind": "behaviour", "items": items, "model_version": "v", "event_ts": 1.0}


def with_dashboard(check: Check, host: str = "127.0.0.1") -> Any:
    """Run ``check(session, base_url)`` against a dashboard (no broker) reading one fake worker."""

    async def go() -> Any:
        async with serving(FakeWorker(events=3)) as (worker,):
            port = free_port()
            settings = Settings.of(dashboard_host=host, dashboard_port=port, dashboard_workers=worker.url)
            collector = Collector(settings, follow_topics=False)
            collector.read_recommendation = read
            runner = web.AppRunner(make_app(settings, collector), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            try:
                async with aiohttp.ClientSession() as session:
                    return await check(session, f"http://127.0.0.1:{port}")
            finally:
                await runner.cleanup()

    return asyncio.run(go())


def test_the_page_and_its_files_are_served_with_a_strict_policy() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> dict[str, Any]:
        out = {}
        for path in ("/", "/static/dashboard.js", "/static/dashboard.css", "/static/vendor/uPlot.iife.min.js"):
            async with s.get(base + path) as resp:
                out[path] = (resp.status, resp.headers.get("Content-Security-Policy", ""), await resp.text())
        return out

    pages = with_dashboard(check)
    assert all(status == 200 for status, _, _ in pages.values())
    assert all("default-src 'self'" in csp and "frame-ancestors 'none'" in csp for _, csp, _ in pages.values())
    assert pages["/static/vendor/uPlot.iife.min.js"][2].startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    html = pages["/"][2]
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "data:,",
        "/static/vendor/uPlot.min.css",
        "/static/dashboard.css",
        "/static/vendor/uPlot.iife.min.js",
        "/static/dashboard.js",
    ]


def test_nothing_but_get_is_accepted() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> list[int]:
        codes = []
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/", "/api/overview", "/api/user?id=u1"):
                async with s.request(method, base + path) as resp:
                    codes.append(resp.status)
        return codes

    assert set(with_dashboard(check)) == {405}


def test_on_loopback_only_loopback_host_names_are_answered() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> list[int]:
        port = base.rsplit(":", 1)[1]
        codes = []
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "evil.example", f"evil.example:{port}"):
            async with s.get(base + "/api/overview", headers={"Host": host}) as resp:
                codes.append(resp.status)
        return codes

    assert with_dashboard(check) == [200, 200, 200, 421, 421]


def test_static_files_stay_inside_the_static_folder() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> list[int]:
        codes = []
        for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/vendor/", "/nope"):
            async with s.get(base + path) as resp:
                codes.append(resp.status)
        return codes

    assert all(code in (403, 404) for code in with_dashboard(check))


def test_the_json_endpoints() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> dict[str, Any]:
        await asyncio.sleep(0.3)  # the collector's first poll
        out: dict[str, Any] = {}
        for name, path in {
            "overview": "/api/overview",
            "dead": "/api/dead-letters",
            "catalogue": "/api/catalogue",
            "user": "/api/user?id=u1",
            "no_user": "/api/user?id=",
        }.items():
            async with s.get(base + path) as resp:
                out[name] = (resp.status, resp.headers.get("Cache-Control"), await resp.json())
        return out

    out = with_dashboard(check)
    status, cache, overview = out["overview"]
    assert (status, cache) == (200, "no-store")
    assert [w["events"] for w in overview["workers"]] == [3.0] and overview["discovery"] == "list"
    assert {"series", "latency", "quality", "weights", "topics", "totals"} <= set(overview)
    assert out["dead"][0] == 200 and out["dead"][2]["total"] == 0
    assert out["catalogue"][0] == 200 and out["catalogue"][2]["newest"] == []
    assert out["user"][0] == 200 and out["user"][2]["recommendation"]["items"][0]["item_id"] == "i1"
    assert out["no_user"][0] == 400 and "1 to 256 characters" in out["no_user"][2]["error"]


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """Users' networks may be closed: no CDN, no web fonts, no external URL in our files."""
    for path in (STATIC / "index.html", STATIC / "dashboard.js", STATIC / "dashboard.css"):
        text = path.read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|\burl\(", text, re.I), path


def test_the_vendored_chart_library_is_the_one_recorded() -> None:
    vendor = STATIC / "vendor"
    recorded = dict(
        reversed(line.split())
        for line in (vendor / "uPlot.VERSION").read_text().splitlines()
        if re.match(r"^[0-9a-f]{64} ", line)
    )
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "MIT" in (vendor / "uPlot.LICENSE").read_text()
