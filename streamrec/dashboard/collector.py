"""The dashboard's collector: polls every worker's ``/metrics`` and ``/stats``, follows the topics, keeps
bounded time series, and answers the page's questions (overview, dead letters, catalogue, one user).

Workers come from ``STREAMREC_DASHBOARD_WORKERS`` when set; otherwise from the keys of ``model-snapshots``
(``fusion/<hostname>:<web_port>`` → ``http://<hostname>:<web_port>``, see
:func:`~streamrec.dashboard.readings.worker_url_from_snapshot_key`). Every poll round reads all workers at
once; a round's rates come from the difference to the previous round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from streamrec.dashboard.feeds import CatalogueLog, DeadLetterLog, TopicFollower, WeightHistory
from streamrec.dashboard.readings import (
    OnlineQuality,
    WorkerReading,
    histogram_quantile,
    rate,
    worker_url_from_snapshot_key,
)
from streamrec.io.kafka import key_partition
from streamrec.io.recommendations import latest_recommendation
from streamrec.io.topics import load_topics
from streamrec.model.events import MAX_ID_LEN
from streamrec.settings import KafkaSettings, Settings

log = logging.getLogger("streamrec.dashboard")

POLL_S = 2.0
"""How often every worker is read (the page refreshes at the same pace)."""
HISTORY_POINTS = 900
"""Poll rounds kept: half an hour at :data:`POLL_S`."""
HTTP_TIMEOUT_S = 1.5
STATS_EVERY_S = 10.0
"""A worker's ``/stats`` is read this often (``/metrics`` at every poll): some of its figures cost the worker a
pass over its profile table, and what the page takes from it (partitions, model, quality) changes slowly."""
LATENCY_WINDOW_S = 60.0
"""The latency histogram shows the events of the last minute (or, when there were none, all since start)."""
LOOKUP_TIMEOUT_S = 20.0
LOOKUPS_AT_ONCE = 2
"""User lookups read a partition of ``recommendations`` each: at most this many run at the same time."""
EXPLAIN_UNAVAILABLE = "not available from this worker version"
HTTP_OK = 200
HTTP_NOT_FOUND = 404
DEFAULT_TOPICS = ("events", "items", "item-embeddings", "recommendations", "dead-letters", "model-snapshots")
QUANTILES = {"p50": 0.5, "p99": 0.99}


class BadLookup(ValueError):
    """A user lookup that cannot be answered as asked (shown to the person, not logged as an error)."""


@dataclass
class WorkerPoint:
    """One worker in one round: its reading (or why there is none) and the rates since the previous round."""

    url: str
    reading: WorkerReading | None
    error: str | None = None
    events_per_s: float | None = None
    recommendations_per_s: float | None = None
    latency_delta: tuple[float, ...] | None = None
    quality_delta: tuple[float, float, float] | None = None
    """(Δscored, Δ(recall·scored), Δ(ndcg·scored)) since the previous round."""


@dataclass
class Round:
    t: float
    points: dict[str, WorkerPoint] = field(default_factory=dict)
    published_per_s: float | None = None
    """Events published to the ``events`` topic per second (from its end offsets)."""


Fetch = Callable[[str], Awaitable[tuple[str, dict[str, Any]]]]
ReadRecommendation = Callable[[KafkaSettings, str], Awaitable[dict[str, Any] | None]]


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 6) for v in values]


class Collector:
    """Everything the page shows, kept in memory and bounded (see the module's docstring)."""

    def __init__(self, settings: Settings, follow_topics: bool = True) -> None:
        self.settings = settings
        self.configured = settings.web.dashboard_worker_urls()
        self.rounds: deque[Round] = deque(maxlen=HISTORY_POINTS)
        self.latest: dict[str, WorkerPoint] = {}
        self.dead_letters = DeadLetterLog()
        self.catalogue = CatalogueLog()
        self.weights = WeightHistory()
        try:
            declared = list(load_topics())
        except (FileNotFoundError, OSError) as exc:
            log.warning("topic contracts not found (%s): using the standard topic names", exc)
            declared = list(DEFAULT_TOPICS)
        self.declared_topics = declared
        self.follower = TopicFollower(
            settings.kafka,
            {
                "dead-letters": lambda r: self.dead_letters.add(r.value, r.timestamp),
                "item-embeddings": lambda r: self.catalogue.add(r.value, r.timestamp),
                "model-snapshots": lambda r: self.weights.add_snapshot(r.key, r.value, r.timestamp),
            },
            sized=declared,
        )
        self.follow_topics = follow_topics
        self.read_recommendation: ReadRecommendation = latest_recommendation
        self._lookups = asyncio.Semaphore(LOOKUPS_AT_ONCE)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._events_end: tuple[float, int] | None = None
        self._stats_at: dict[str, float] = {}
        """Per worker, when its ``/stats`` was last read."""
        self._quality_base: dict[str, OnlineQuality] = {}
        """Per worker, the online quality it reported at the last read of ``/stats`` (the base of the next delta)."""

    # --- running ------------------------------------------------------------------------------------------
    async def start(self, background: bool = True) -> None:
        """Open the HTTP session; with ``background``, poll every :data:`POLL_S` (tests call :meth:`poll_once`)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        if background:
            self._tasks.append(asyncio.create_task(self._poll_forever()))
        if background and self.follow_topics:
            self._tasks.append(asyncio.create_task(self.follower.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # a bad page from one worker must not stop the dashboard
                log.exception("dashboard: poll failed")
            await asyncio.sleep(POLL_S)

    # --- workers --------------------------------------------------------------------------------------------
    def worker_urls(self) -> list[str]:
        """The configured list, or the workers found on ``model-snapshots``."""
        if self.configured:
            return list(self.configured)
        found = {worker_url_from_snapshot_key(k) for k in self.weights.snapshot_keys}
        return sorted(u for u in found if u is not None)

    @property
    def discovery(self) -> str:
        return "list" if self.configured else "model-snapshots"

    async def _get(self, url: str, with_stats: bool) -> tuple[str, dict[str, Any] | None]:
        """A worker's ``/metrics`` text and, ``with_stats``, its ``/stats`` JSON (``{}`` when it has none)."""
        session = self._session
        if session is None:
            raise RuntimeError("the collector is not started")
        async with session.get(f"{url}/metrics") as resp:
            resp.raise_for_status()
            metrics = await resp.text()
        if not with_stats:
            return metrics, None
        stats: dict[str, Any] = {}
        async with session.get(f"{url}/stats") as resp:
            if resp.status == 200:
                with contextlib.suppress(orjson.JSONDecodeError, aiohttp.ContentTypeError):
                    body = orjson.loads(await resp.read())
                    stats = body if isinstance(body, dict) else {}
        return metrics, stats

    async def _read(self, url: str, t: float) -> WorkerPoint:
        """One worker now; its ``/stats`` only every :data:`STATS_EVERY_S` (in between, the last one read)."""
        before = self.latest.get(url)
        kept = before.reading.stats if before is not None and before.reading is not None else None
        with_stats = kept is None or t - self._stats_at.get(url, -math.inf) >= STATS_EVERY_S
        try:
            metrics, stats = await self._get(url, with_stats)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return WorkerPoint(url, None, error=f"{type(exc).__name__}: {exc}".strip(": "))
        if stats is not None:
            self._stats_at[url] = t
        reading = WorkerReading.from_pages(url, t, metrics, kept if stats is None else stats, stats is not None)
        return WorkerPoint(url, reading)

    async def poll_once(self, t: float | None = None) -> Round:
        """Read every worker now and record the round (rates against the previous one)."""
        t = time.time() if t is None else t
        urls = self.worker_urls()
        for gone in set(self.latest) - set(urls):  # no longer listed or discovered
            del self.latest[gone]
            self._stats_at.pop(gone, None)
            self._quality_base.pop(gone, None)
        points = await asyncio.gather(*(self._read(u, t) for u in urls))
        rnd = Round(t)
        for point in points:
            before = self.latest.get(point.url)
            prev = before.reading if before is not None else None
            now = point.reading
            if now is not None and prev is not None:
                dt = now.t - prev.t
                point.events_per_s = rate(prev.events_total, now.events_total, dt)
                point.recommendations_per_s = rate(prev.recommendations_total, now.recommendations_total, dt)
                point.latency_delta = now.latency_delta(prev)
            if now is not None and now.stats_fresh:
                self._new_stats(point, now, t)
            rnd.points[point.url] = point
            self.latest[point.url] = point if now is not None else self._keep_last(point, before)
        end = self.follower.end_offsets.get(self.settings.kafka.topic("events"))
        if end is not None and self.follower.sized_at is not None:
            if self._events_end is not None:
                rnd.published_per_s = rate(float(self._events_end[1]), float(end), t - self._events_end[0])
            self._events_end = (t, end)
        self.rounds.append(rnd)
        return rnd

    def _new_stats(self, point: WorkerPoint, now: WorkerReading, t: float) -> None:
        """Online quality since the worker's previous ``/stats`` (none across a restart), and its ranker weights."""
        q_now, q_prev = now.online_quality, self._quality_base.get(point.url)
        if q_now is not None and q_prev is not None and q_now.scored >= q_prev.scored:
            point.quality_delta = (
                q_now.scored - q_prev.scored,
                q_now.recall * q_now.scored - q_prev.recall * q_prev.scored,
                q_now.ndcg * q_now.scored - q_prev.ndcg * q_prev.scored,
            )
        if q_now is not None:
            self._quality_base[point.url] = q_now
        weights = now.ranker_weights
        if weights:
            self.weights.add(t, weights, "stats")

    @staticmethod
    def _keep_last(failed: WorkerPoint, before: WorkerPoint | None) -> WorkerPoint:
        """A worker that did not answer keeps its last reading (shown as down), so the next answer has a base."""
        return WorkerPoint(failed.url, before.reading if before is not None else None, error=failed.error)

    # --- answers ----------------------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        now = time.time()
        rounds = list(self.rounds)
        urls = sorted({u for r in rounds for u in r.points} | set(self.latest))
        workers = [self._worker_row(self.latest[u]) for u in urls if u in self.latest]
        up = [w for w in workers if w["up"]]
        return {
            "now": now,
            "poll_s": POLL_S,
            "discovery": self.discovery,
            "workers": workers,
            "totals": {
                "workers_up": len(up),
                "workers": len(workers),
                "events": sum(w["events"] or 0 for w in up),
                "events_per_s": sum(w["events_per_s"] or 0 for w in up),
                "lag": sum(w["lag_total"] for w in up),
                "recommendations": sum(w["recommendations"] or 0 for w in up),
                "dead_letters": self.dead_letters.total,
                "items_indexed": max((w["items_indexed"] or 0 for w in up), default=0),
                "users": sum(w["users"] or 0 for w in up),
                "model_steps": max((w["model_steps"] or 0 for w in up), default=0),
            },
            "series": {
                "t": [r.t for r in rounds],
                "published_per_s": _rounded([r.published_per_s for r in rounds]),
                "events_per_s": {u: _rounded([self._at(r, u, "events_per_s") for r in rounds]) for u in urls},
                "lag": {u: [self._lag_at(r, u) for r in rounds] for u in urls},
                **{name: self._latency_quantiles(rounds, q) for name, q in QUANTILES.items()},
            },
            "latency": self._latency_histogram(rounds, now),
            "quality": self._quality(rounds),
            "weights": self.weights.to_dict(),
            "topics": self._topics(),
            "broker_error": self.follower.error,
        }

    @staticmethod
    def _at(rnd: Round, url: str, attr: str) -> float | None:
        point = rnd.points.get(url)
        return None if point is None else getattr(point, attr)

    @staticmethod
    def _lag_at(rnd: Round, url: str) -> float | None:
        point = rnd.points.get(url)
        if point is None or point.reading is None:
            return None
        return sum(point.reading.lag.values())

    def _worker_row(self, point: WorkerPoint) -> dict[str, Any]:
        r = point.reading
        up = point.error is None and r is not None
        return {
            "url": point.url,
            "up": up,
            "error": point.error,
            "last_seen": r.t if r is not None else None,
            "worker_id": r.worker_id if r is not None else None,
            "events": r.events_total if r is not None else None,
            "events_per_s": point.events_per_s,
            "recommendations": r.recommendations_total if r is not None else None,
            "dead_letters": r.dead_letters_total if r is not None else None,
            "lag": {str(p): v for p, v in sorted(r.lag.items())} if r is not None else {},
            "lag_total": sum(r.lag.values()) if r is not None else 0.0,
            "assigned_partitions": r.assigned_partitions if r is not None else [],
            "model_version": r.stats.get("model_version") if r is not None else None,
            "model_steps": r.model_steps if r is not None else None,
            "items_indexed": r.items_indexed if r is not None else None,
            "users": r.users if r is not None else None,
            "has_quality": r is not None and r.online_quality is not None,
            "has_weights": r is not None and r.ranker_weights is not None,
        }

    @staticmethod
    def _round_latency(rnd: Round) -> tuple[tuple[float, ...], list[float]] | None:
        """Cumulative latency buckets of a round's events, summed over workers with the same buckets."""
        les: tuple[float, ...] | None = None
        total: list[float] | None = None
        for point in rnd.points.values():
            if point.latency_delta is None or point.reading is None:
                continue
            if les is None:
                les, total = point.reading.latency_le, list(point.latency_delta)
            elif point.reading.latency_le == les and total is not None:
                total = [a + b for a, b in zip(total, point.latency_delta, strict=True)]
        return None if les is None or total is None else (les, total)

    def _latency_quantiles(self, rounds: list[Round], q: float) -> list[float | None]:
        out: list[float | None] = []
        for rnd in rounds:
            both = self._round_latency(rnd)
            out.append(None if both is None else histogram_quantile(both[0], tuple(both[1]), q))
        return out

    def _latency_histogram(self, rounds: list[Round], now: float) -> dict[str, Any]:
        les: tuple[float, ...] = ()
        recent: list[float] = []
        for rnd in rounds:
            if rnd.t < now - LATENCY_WINDOW_S:
                continue
            both = self._round_latency(rnd)
            if both is None:
                continue
            if not recent:
                les, recent = both[0], list(both[1])
            elif both[0] == les:
                recent = [a + b for a, b in zip(recent, both[1], strict=True)]
        window = f"last {LATENCY_WINDOW_S:.0f} s"
        cumulative = recent
        if not recent or recent[-1] == 0:
            window, les, cumulative = "since start", *self._lifetime_latency()
        counts = [c - (cumulative[i - 1] if i else 0.0) for i, c in enumerate(cumulative)]
        return {
            "le": ["+Inf" if le == float("inf") else f"{le:g}" for le in les],
            "counts": counts,
            "window": window,
            "events": cumulative[-1] if cumulative else 0.0,
            **{name: histogram_quantile(les, tuple(cumulative), q) for name, q in QUANTILES.items()},
        }

    def _lifetime_latency(self) -> tuple[tuple[float, ...], list[float]]:
        les: tuple[float, ...] = ()
        total: list[float] = []
        for point in self.latest.values():
            r = point.reading
            if r is None or not r.latency_le:
                continue
            if not total:
                les, total = r.latency_le, list(r.latency_cumulative)
            elif r.latency_le == les:
                total = [a + b for a, b in zip(total, r.latency_cumulative, strict=True)]
        return les, total

    def _quality(self, rounds: list[Round]) -> dict[str, Any]:
        k = None
        t: list[float] = []
        recall: list[float | None] = []
        ndcg: list[float | None] = []
        for rnd in rounds:
            deltas = [p.quality_delta for p in rnd.points.values() if p.quality_delta is not None]
            scored = sum(d[0] for d in deltas)
            t.append(rnd.t)
            recall.append(sum(d[1] for d in deltas) / scored if scored > 0 else None)
            ndcg.append(sum(d[2] for d in deltas) / scored if scored > 0 else None)
        latest = [p.reading.online_quality for p in self.latest.values() if p.reading is not None]
        known = [q for q in latest if q is not None]
        if known:
            k = known[0].k
            scored_total = sum(q.scored for q in known)
            overall = {
                "scored": scored_total,
                "recall": sum(q.recall * q.scored for q in known) / scored_total if scored_total else None,
                "ndcg": sum(q.ndcg * q.scored for q in known) / scored_total if scored_total else None,
            }
        else:
            overall = None
        return {"available": bool(known), "k": k, "overall": overall, "t": t, "recall": recall, "ndcg": ndcg}

    def _topics(self) -> list[dict[str, Any]]:
        out = []
        for name in self.declared_topics:
            full = self.settings.kafka.topic(name)
            parts = self.follower.partitions.get(full)
            out.append(
                {
                    "name": full,
                    "partitions": len(parts) if parts is not None else None,
                    "end_offsets": self.follower.end_offsets.get(full),
                }
            )
        return out

    def dead_letters_view(self) -> dict[str, Any]:
        return self.dead_letters.to_dict(time.time())

    def catalogue_view(self) -> dict[str, Any]:
        up = [p.reading for p in self.latest.values() if p.error is None and p.reading is not None]
        return {
            "items_indexed": {r.url: r.items_indexed for r in up},
            **self.catalogue.to_dict(time.time()),
        }

    # --- one user ---------------------------------------------------------------------------------------------
    def events_partitions(self) -> list[int]:
        topic = self.settings.kafka.topic("events")
        known = self.follower.partitions.get(topic)
        if known:
            return known
        try:
            return list(range(load_topics()["events"].partitions))
        except (FileNotFoundError, KeyError, OSError):
            return []

    def worker_for(self, user_id: str) -> tuple[int | None, str | None]:
        """The ``events`` partition of a user and the live worker that holds it now (None when unknown)."""
        parts = self.events_partitions()
        if not parts:
            return None, None
        partition = key_partition(user_id.encode(), parts)
        for url, point in sorted(self.latest.items()):
            if point.error is None and point.reading is not None and partition in point.reading.assigned_partitions:
                return partition, url
        return partition, None

    async def user(self, user_id: str) -> dict[str, Any]:
        """The user's latest list (scores, reasons, titles), and the worker's explanation where it offers one."""
        if not 1 <= len(user_id) <= MAX_ID_LEN:
            raise BadLookup(f"a user id has 1 to {MAX_ID_LEN} characters")
        async with self._lookups:
            try:
                rec = await asyncio.wait_for(
                    self.read_recommendation(self.settings.kafka, user_id), timeout=LOOKUP_TIMEOUT_S
                )
            except TimeoutError:
                raise BadLookup(f"reading the recommendations topic took over {LOOKUP_TIMEOUT_S:.0f}s") from None
        if rec is not None:
            rec = dict(rec)
            rec["items"] = [{**item, **self.catalogue.describe(str(item.get("item_id")))} for item in rec["items"]]
        partition, url = self.worker_for(user_id)
        explain, status, message = None, "no_worker", "no live worker holds this user's partition"
        if url is not None:
            explain, status, message = await self._explain(url, user_id)
        return {
            "user_id": user_id,
            "recommendation": rec,
            "partition": partition,
            "worker": url,
            "explain": explain,
            "explain_status": status,
            "explain_message": message,
        }

    async def _explain(self, url: str, user_id: str) -> tuple[dict[str, Any] | None, str, str | None]:
        session = self._session
        if session is None:
            return None, "error", "the collector is not started"
        try:
            async with session.get(f"{url}/explain", params={"user": user_id}) as resp:
                if resp.status == HTTP_NOT_FOUND:  # the worker says why (no profile, not its partition) in JSON
                    reply = orjson.loads(await resp.read())
                    if isinstance(reply, dict) and isinstance(reply.get("message"), str):
                        return None, "not_found", reply["message"]
                    return None, "unavailable", EXPLAIN_UNAVAILABLE
                if resp.status != HTTP_OK:
                    return None, "unavailable", EXPLAIN_UNAVAILABLE
                body = orjson.loads(await resp.read())
        except orjson.JSONDecodeError:  # an older worker's plain "404: Not Found"
            return None, "unavailable", EXPLAIN_UNAVAILABLE
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, "error", f"{type(exc).__name__}: {exc}"
        if not isinstance(body, dict):
            return None, "unavailable", EXPLAIN_UNAVAILABLE
        for item in body.get("items") or ():
            if isinstance(item, dict) and "item_id" in item:
                item.update(self.catalogue.describe(str(item["item_id"])))
        for item in body.get("recent_items") or ():
            if isinstance(item, dict) and "item_id" in item:
                item.update(self.catalogue.describe(str(item["item_id"])))
        return body, "ok", None
