"""Where a worker's time goes while it drains the bench's synthetic backlog: cProfile of both sides, per event.

Starts a local broker, publishes ``streamrec bench``'s catalogue and backlog, and runs one worker with the core
in a thread of the worker's process (``core_process=false``) under two profilers, both on thread CPU time
(``time.thread_time``, so waiting for the GIL or for the broker is not counted):

* the core — every :meth:`CoreService.process <streamrec.worker.core.CoreService.process>` call (learning,
  ranking, profiles in and out, lists out), in the core's thread;
* the Faust side — the event loop's thread from the moment the catalogue is loaded (fetching, decoding,
  batching, the profile table, publishing), without the ``/stats`` requests the drain is watched with.

cProfile's cost per Python call inflates the Faust side (many small calls) far more than the core (numpy): read
each side's shares, and take the sides' CPU per event from ``streamrec bench`` (``drain_cpu_cores``).

Prints the events/s under the profilers, then for each side its CPU seconds, µs per event and the functions
that take the most (cumulative and own time), as a share of that side and µs per event; the raw profiles are
kept (``--out``) for ``python -m pstats``. ``--timers`` instead times the core's main steps alone (thread CPU
time around each of :data:`TIMED`, inclusive, a fraction of a µs per call), so their µs per event are what
they cost without a profiler::

    .venv/bin/python benchmarks/profile_worker.py --events 60000 --out out/profile
    .venv/bin/python benchmarks/profile_worker.py --events 60000 --timers
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import io
import json
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CORE_PROFILE = "core.prof"
FAUST_PROFILE = "faust.prof"
TIMERS = "timers.json"
TOTAL = "streamrec.worker.core:CoreService.process"
TIMED = (
    TOTAL,
    "streamrec.worker.core:BytesProfileStore.get",
    "streamrec.worker.core:BytesProfileStore.changes",
    "streamrec.model.recommender:Recommendation.to_dict",
    "streamrec.worker.core:CoreService.trim",
    "streamrec.model.recommender:Recommender.learn",
    "streamrec.model.recommender:apply_event",
    "streamrec.model.recommender:Recommender.fold_item_event",
    "streamrec.model.recommender:Recommender._negatives",
    "streamrec.model.recommender:Recommender._step",
    "streamrec.model.ranker:FusionRanker.step",
    "streamrec.model.recommender:Recommender.fold_visits",
    "streamrec.model.covisitation:CoVisitation.add_many",
    "streamrec.model.coembedding:CoEmbedding.add_many",
    "streamrec.model.recommender:Recommender._query_vectors",
    "streamrec.model.recommender:Recommender.recommend",
    "streamrec.model.recommender:Recommender.user_contexts",
    "streamrec.model.covisitation:CoVisitation.score_arrays_many",
    "streamrec.model.catalog:Catalog.search",
    "streamrec.model.recommender:candidate_pools",
    "streamrec.model.recommender:Recommender.features_many",
    "streamrec.model.coembedding:CoEmbedding.similarity_many",
    "streamrec.model.ranker:FusionRanker.score",
    "streamrec.model.ranker:FusionRanker.reasons_many",
    "streamrec.model.offers:OfferCache.remember",
    "streamrec.model.sessions:SessionIndex.add_many",
    "streamrec.model.sessions:SessionIndex.scores_many",
    "streamrec.model.recommender:select_lists",
)
"""What ``--timers`` times, as ``module:attribute`` (module functions where the caller's module looks them up)."""
TOP = 30
MIN_SHARE = 0.005
"""Functions below this share of their side are left out of the printed lists."""


def install_timers(seconds: dict[str, float], calls: dict[str, int]) -> None:
    """Wrap each of :data:`TIMED` to add its thread CPU time (inclusive) and its calls to the two mappings, counted
    only within :data:`TOTAL` (the core's start-up warm-up ranks too)."""
    inside = [False]

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if name != TOTAL and not inside[0]:
                return function(*args, **kwargs)
            inside[0] = True
            t0 = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.thread_time() - t0
                calls[name] += 1
                if name == TOTAL:
                    inside[0] = False

        return wrapper

    for name in TIMED:
        module_name, path = name.split(":")
        owner: Any = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, attribute, timed(name, getattr(owner, attribute)))


def timers_child(out: Path) -> None:
    """Run ``streamrec worker`` with the core's main steps timed (:func:`install_timers`)."""
    from streamrec.settings import Settings
    from streamrec.worker.app import run_worker

    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    install_timers(seconds, calls)
    sys.argv = [sys.argv[0], "worker"]
    try:
        run_worker(Settings.from_env(), "warning")
    finally:
        (out / TIMERS).write_text(json.dumps({"seconds": seconds, "calls": calls}))


def timers_report(path: Path, events: int) -> str:
    """Each timed step's µs per event (inclusive), its share of the core's total and its calls per event."""
    data = json.loads(path.read_text())
    total = data["seconds"].get(TOTAL, 0.0)
    lines = [f"== core (CoreService.process), timed: {total / events * 1e6:,.0f} µs per event =="]
    lines.append(
        "share of the core, µs per event, calls per event, step (inclusive: nested steps are in their callers)"
    )
    for name in TIMED:
        spent, calls = data["seconds"].get(name, 0.0), data["calls"].get(name, 0)
        lines.append(f"{spent / max(total, 1e-9):7.1%} {spent / events * 1e6:9.1f} {calls / events:9.3f}  {name}")
    return "\n".join(lines)


def child(out: Path) -> None:
    """Run ``streamrec worker`` with the core's calls and the event loop (once the catalogue is in) profiled."""
    from streamrec.settings import Settings
    from streamrec.worker import worker as worker_module
    from streamrec.worker.app import run_worker
    from streamrec.worker.core import CoreService

    core = cProfile.Profile(time.thread_time)
    loop = cProfile.Profile(time.thread_time)
    process = CoreService.process

    def profiled_process(self: CoreService, *args: Any, **kwargs: Any) -> Any:
        return core.runcall(process, self, *args, **kwargs)

    loaded = worker_module.Worker._catalog_loaded

    async def profile_from_now(self: Any, records: int) -> None:
        await loaded(self, records)
        loop.enable()

    stats_dict = worker_module.Worker.stats_dict

    def unprofiled_stats(self: Any, *args: Any, **kwargs: Any) -> Any:
        """The bench's own /stats polling is its cost, not the worker's: left out of the loop's profile."""
        loop.disable()
        try:
            return stats_dict(self, *args, **kwargs)
        finally:
            loop.enable()

    CoreService.process = profiled_process  # type: ignore[method-assign]
    worker_module.Worker._catalog_loaded = profile_from_now  # type: ignore[method-assign]
    worker_module.Worker.stats_dict = unprofiled_stats  # type: ignore[method-assign]
    settings = Settings.from_env()
    if settings.batching.core_process:
        raise SystemExit("profile_worker needs STREAMREC_CORE_PROCESS=false (the core's calls in this process)")
    sys.argv = [sys.argv[0], "worker"]
    try:
        run_worker(settings, "warning")
    finally:
        loop.disable()
        core.dump_stats(out / CORE_PROFILE)
        loop.dump_stats(out / FAUST_PROFILE)


def report(path: Path, title: str, events: int) -> str:
    """The side's CPU seconds and µs per event, and its heaviest functions (cumulative, then own time)."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    lines = [f"== {title}: {total:.1f} s CPU, {total / events * 1e6:,.0f} µs per event =="]
    rows = stats.stats  # type: ignore[attr-defined]
    for label, index in (("cumulative", 3), ("own", 2)):
        lines.append(f"-- by {label} time: share of {title}, µs per event, calls per event, function")
        ranked = sorted(rows.items(), key=lambda kv: -kv[1][index])[:TOP]
        for (file, line, name), entry in ranked:
            seconds = entry[index]
            if seconds / max(total, 1e-9) < MIN_SHARE:
                break
            where = f"{Path(file).name}:{line}" if line else file
            lines.append(
                f"{seconds / total:7.1%} {seconds / events * 1e6:9.1f} {entry[1] / events:9.3f}  {name} ({where})"
            )
    return "\n".join(lines)


async def _drain(events_n: int, workdir: Path, out: Path, timers: bool) -> dict[str, Any]:
    from streamrec.encoding.encoder import fallback_embeddings
    from streamrec.lab.bench import BenchOptions, cohort_events, drain_backlog, publish_backlog
    from streamrec.lab.broker import LocalBroker, free_port
    from streamrec.lab.synthetic import make_shop
    from streamrec.settings import Settings

    opts = BenchOptions(events=events_n)
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings.from_env().replace(
            broker=broker.url, web_port=free_port(), data_dir=str(workdir / "data"), core_process=False
        )
        seed = settings.retrieval.seed
        now = time.time()
        shop = make_shop(opts.items, opts.users, seed=seed, ts=now - events_n - 1.0)
        events = cohort_events(shop, events_n, opts.windows, seed, start_ts=now - events_n)
        await publish_backlog(settings, fallback_embeddings(shop.items, settings), events, "profiled")
        program = [sys.executable, str(Path(__file__).resolve()), "--child", str(out)] + (
            ["--timers"] if timers else []
        )
        figures, _, _ = await drain_backlog(settings, events, workdir, "profiled", program=program)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--out", type=Path, default=None, help="keep the profiles here (default: a temp dir)")
    parser.add_argument("--timers", action="store_true", help="time the core's main steps instead of profiling")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.child:
        (timers_child if args.timers else child)(args.child)
        return
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-profile-"))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(_drain(args.events, workdir, out, args.timers))
    buffer = io.StringIO()
    buffer.write(
        f"{args.events:,} events, {figures['users']:,} users, {figures['batches']} batches: "
        f"{figures['worker_events_per_s']:,.0f} events/s (core in a thread); CPU µs per event: "
        f"{figures['drain_cpu_us_per_event']}\n"
    )
    if args.timers:
        buffer.write(timers_report(out / TIMERS, args.events) + "\n")
    else:
        for name, title in ((CORE_PROFILE, "core (CoreService.process)"), (FAUST_PROFILE, "Faust side (event loop)")):
            buffer.write(report(out / name, title, args.events) + "\n")
    print(buffer.getvalue())


if __name__ == "__main__":
    main()
