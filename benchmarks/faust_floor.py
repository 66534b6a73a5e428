"""Events/s of the worker's Faust app when its agent does no recommender work, both phases, on a fresh broker.

``streamrec bench`` measures the ``publish`` phase in every run (``faust_floor_events_per_s``); this runs
:mod:`streamrec.lab.floor` alone, ``bare`` (decode only) and ``publish`` (also real-sized profiles and lists),
over the bench's synthetic backlog, to see what the framework costs without the rest of the bench. Prints one
JSON object::

    .venv/bin/python benchmarks/faust_floor.py --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamrec.io.kafka import make_producer
from streamrec.io.topics import apply_topics
from streamrec.lab.bench import BenchOptions, cohort_events, event_messages, machine, send_all
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.floor import PHASES, create_floor_topics, run_floor
from streamrec.lab.synthetic import make_shop
from streamrec.model.events import Event
from streamrec.settings import Settings


async def prefill(settings: Settings, events: Sequence[Event]) -> float:
    """Create the topics and publish the backlog; returns events/s."""
    await apply_topics(settings.kafka)
    await create_floor_topics(settings)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        return await send_all(producer, settings.kafka.topic("events"), event_messages(events))
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=BenchOptions.events)
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    args = parser.parse_args(argv)
    opts = BenchOptions(events=args.events)
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-floor-"))
    result: dict[str, Any] = {"machine": machine(), "events": args.events}
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings.from_env().replace(broker=broker.url, data_dir=str(workdir / "data"))
        seed = settings.retrieval.seed
        shop = make_shop(opts.items, opts.users, seed=seed)
        events = cohort_events(shop, opts.events, opts.windows, seed, start_ts=0.0)
        result["produce_events_per_s"] = asyncio.run(prefill(settings, events))
        items = [i.item_id for i in shop.items]
        users = sorted({e.user_id for e in events})
        pid = broker.process.pid if broker.process else None
        for phase in args.phases:
            phase_settings = settings.replace(app_id=f"streamrec-floor-{phase}", web_port=free_port())
            result[phase] = run_floor(phase_settings, phase, len(events), items, users, workdir, pid)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
