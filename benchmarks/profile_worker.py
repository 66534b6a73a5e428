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
kept (``--out``) for ``python -m pstats``::

    .venv/bin/python benchmarks/profile_worker.py --events 60000 --out out/profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CORE_PROFILE = "core.prof"
FAUST_PROFILE = "faust.prof"
TOP = 30
MIN_SHARE = 0.005
"""Functions below this share of their side are left out of the printed lists."""


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


async def _drain(events_n: int, workdir: Path, out: Path) -> dict[str, Any]:
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
        program = [sys.executable, str(Path(__file__).resolve()), "--child", str(out)]
        figures, _, _ = await drain_backlog(settings, events, workdir, "profiled", program=program)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--out", type=Path, default=None, help="keep the profiles here (default: a temp dir)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.child:
        child(args.child)
        return
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-profile-"))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(_drain(args.events, workdir, out))
    buffer = io.StringIO()
    buffer.write(
        f"{args.events:,} events, {figures['users']:,} users, {figures['batches']} batches: "
        f"{figures['worker_events_per_s']:,.0f} events/s under the profilers (core in a thread)\n"
    )
    for name, title in ((CORE_PROFILE, "core (CoreService.process)"), (FAUST_PROFILE, "Faust side (event loop)")):
        buffer.write(report(out / name, title, args.events) + "\n")
    print(buffer.getvalue())


if __name__ == "__main__":
    main()
