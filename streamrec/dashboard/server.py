"""The dashboard's web server: one static page and GET-only JSON endpoints, on loopback by default.

Read-only by construction: every route is a GET, any other method is refused, and nothing here writes to a
topic or calls a worker endpoint that changes state. The page shows users' recommendations, so when the
server listens on loopback it also refuses requests whose ``Host`` is not a loopback name (a web page
elsewhere cannot read it through DNS rebinding), and every response forbids framing and foreign scripts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from streamrec.dashboard.collector import BadLookup, Collector
from streamrec.settings import Settings

log = logging.getLogger("streamrec.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
READ_METHODS = ("GET", "HEAD")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
COLLECTOR_KEY: web.AppKey[Collector] = web.AppKey("collector", Collector)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only answers on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def make_guard(bound_host: str) -> Any:
    """The middleware that keeps the server read-only and, on loopback, answering loopback names only."""
    loopback_only = is_loopback(bound_host)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            resp: web.StreamResponse = web.Response(
                status=405, text="read-only: GET only\n", headers={"Allow": ", ".join(READ_METHODS)}
            )
        elif loopback_only and not is_loopback(URL(f"http://{request.host}").host or ""):
            resp = web.Response(status=421, text="this dashboard answers on loopback names only\n")
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = web.Response(status=exc.status, text=f"{exc.reason}\n")
        resp.headers.update(SECURITY_HEADERS)
        return resp

    return guard


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def overview(request: web.Request) -> web.Response:
    return _json(request.app[COLLECTOR_KEY].overview())


async def dead_letters(request: web.Request) -> web.Response:
    return _json(request.app[COLLECTOR_KEY].dead_letters_view())


async def catalogue(request: web.Request) -> web.Response:
    return _json(request.app[COLLECTOR_KEY].catalogue_view())


async def user(request: web.Request) -> web.Response:
    user_id = request.query.get("id", "")
    try:
        return _json(await request.app[COLLECTOR_KEY].user(user_id))
    except BadLookup as exc:
        return _json({"error": str(exc)}, status=400)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(settings: Settings, collector: Collector) -> web.Application:
    """The dashboard's application (the collector is started and stopped with it)."""
    app = web.Application(middlewares=[make_guard(settings.web.dashboard_host)])
    app[COLLECTOR_KEY] = collector
    app.router.add_get("/", index)
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/dead-letters", dead_letters)
    app.router.add_get("/api/catalogue", catalogue)
    app.router.add_get("/api/user", user)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)

    async def lifecycle(app: web.Application) -> Any:
        await collector.start()
        yield
        await collector.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def address(settings: Settings) -> str:
    """The page's address (IPv6 hosts in brackets)."""
    host = settings.web.dashboard_host
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{settings.web.dashboard_port}/"


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve the dashboard until ``stop`` is set (or SIGINT/SIGTERM when none is given)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(settings, Collector(settings)), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.web.dashboard_host, settings.web.dashboard_port)
        await site.start()
        workers = settings.web.dashboard_workers or "discovered from model-snapshots"
        print(f"streamrec dashboard on {address(settings)} (workers: {workers}; Ctrl-C to stop)", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def run_dashboard(settings: Settings) -> None:
    """``streamrec dashboard``: serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
