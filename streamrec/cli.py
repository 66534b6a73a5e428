"""``streamrec`` command line: broker, topics, workers, replay, recommendations, privacy requests and the demo.

Every command reads :class:`Settings` from the environment (``STREAMREC_*``); ``--broker`` overrides
``STREAMREC_BROKER`` for one call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from streamrec.encoding.threads import limit_threads
from streamrec.settings import Settings, SettingsError


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@click.group()
@click.option("--broker", envvar="STREAMREC_BROKER", default=None, help="Kafka bootstrap servers (host:port,...).")
@click.pass_context
def cli(ctx: click.Context, broker: str | None) -> None:
    """streamrec — streaming real-time recommendations with online learning on Kafka."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if broker:
        settings = settings.replace(broker=broker)
        os.environ["STREAMREC_BROKER"] = broker  # child processes and Faust see the same broker
    ctx.obj = {"settings": settings}


@cli.command()
@click.option("--port", default=9092, show_default=True, help="Loopback port to listen on.")
def broker(port: int) -> None:
    """Run the local Kafka-compatible broker (Tansu, in memory) on 127.0.0.1 until Ctrl-C."""
    from streamrec.lab.broker import LocalBroker

    with LocalBroker(port) as b:
        click.echo(f"local broker listening on {b.url} (in-memory; Ctrl-C to stop)")
        stop = {"flag": False}

        def _stop(*_: Any) -> None:
            stop["flag"] = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stop["flag"] and b.process is not None and b.process.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass


@cli.group()
def topics() -> None:
    """Topic contracts (topics/*.json)."""


@topics.command("apply")
@click.pass_context
def topics_apply(ctx: click.Context) -> None:
    """Create every declared topic that is missing on the broker."""
    from streamrec.io.topics import apply_topics

    created = asyncio.run(apply_topics(_settings(ctx).kafka))
    click.echo(f"created {len(created)} topic(s): {', '.join(created) if created else '(all existed)'}")


@topics.command("list")
def topics_list() -> None:
    """Print the declared topics."""
    from streamrec.io.topics import load_topics

    for spec in load_topics().values():
        policy = spec.config.get("cleanup.policy", "delete")
        click.echo(f"{spec.name:18} partitions={spec.partitions:<3} key={spec.key:22} {policy:8} {spec.description}")


@cli.command()
@click.option("--loglevel", default="info", show_default=True)
@click.pass_context
def worker(ctx: click.Context, loglevel: str) -> None:
    """Run a recommender worker (Faust app; scale out by starting more)."""
    from streamrec.worker.app import run_worker

    sys.argv = [sys.argv[0], "worker"]  # Faust's command line parser must not see ours
    run_worker(_settings(ctx), loglevel)


@cli.command()
@click.pass_context
def encoder(ctx: click.Context) -> None:
    """Run an encoder worker: items → item-embeddings."""
    from streamrec.worker.encoder_worker import main as encoder_main

    encoder_main(_settings(ctx))


EXIT_UNUSABLE_LOG = 3
"""``replay``/``eval`` exit status when no row of the log could be used or too many were bad (2 is a usage error)."""
DEFAULT_MAX_SKIPPED = "1%"
"""Largest share of bad rows that ``replay`` and ``eval`` accept before they refuse a log."""


def _csv_mapping(fmt: str, columns: str | None, type_map: str | None, ts_format: str, delimiter: str, no_header: bool):  # type: ignore[no-untyped-def]
    from streamrec.io.logs import CsvMapping

    if fmt != "csv":
        return None
    if not columns or not type_map:
        raise click.UsageError("--format csv needs --columns and --types")
    try:
        return CsvMapping.from_options(
            columns, type_map, timestamp_format=ts_format, delimiter=delimiter, has_header=not no_header
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def read_input(
    file: Path, fmt: str, mapping: Any, limit: int | None, max_skipped: float, need_events: bool
) -> list[Any]:
    """Read a log for ``replay`` or ``eval`` and report on it (stderr): counts, then the first skip reasons.

    Exits with :data:`EXIT_UNUSABLE_LOG` before anything is published or evaluated when no row could be used
    or more than ``max_skipped`` of the rows were bad.
    """
    from streamrec.io.logs import ReplayStats, ingest_report, read_log

    stats = ReplayStats()
    try:
        records = list(read_log(file, fmt, mapping=mapping, limit=limit, stats=stats))
    except (OSError, ValueError) as exc:
        click.echo(f"error: cannot read {file}: {exc}", err=True)
        sys.exit(EXIT_UNUSABLE_LOG)
    lines, problem = ingest_report(stats, max_skipped, need_events)
    for line in lines:
        click.echo(line, err=True)
    if problem:
        click.echo(f"error: {problem}; nothing was {'evaluated' if need_events else 'published'}", err=True)
        sys.exit(EXIT_UNUSABLE_LOG)
    return records


class Share(click.ParamType):
    """A share of rows: ``0.01`` or ``1%``, between 0 and 1."""

    name = "share"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            self.fail(f"{value!r} is not a share (e.g. 0.01 or 1%)", param, ctx)
        if not 0.0 <= share <= 1.0:
            self.fail(f"{value!r} is not between 0 and 1 (0% and 100%)", param, ctx)
        return share


def csv_options(f: Any) -> Any:
    """The input options shared by ``replay`` and ``eval``: the generic-CSV mapping and the bad-row limit."""
    for option in reversed(
        [
            click.option(
                "--columns",
                default=None,
                help="csv: column mapping, e.g. user=uid,item=sku,type=action,ts=time[,session=sid,category=cat,"
                "brand=brand,price=price,title=name,description=text].",
            ),
            click.option(
                "--types",
                "type_map",
                default=None,
                help="csv: event names, e.g. pageview=view,order=purchase; NAME=drop leaves a type out (counted "
                "as dropped, not bad).",
            ),
            click.option(
                "--ts-format",
                type=click.Choice(["auto", "unix", "unix_ms", "iso"]),
                default="auto",
                show_default=True,
                help="csv: auto reads ISO 8601 (T or space, Z, offsets, ' UTC') and unix s or ms (by magnitude).",
            ),
            click.option("--delimiter", default=",", show_default=True),
            click.option("--no-header", is_flag=True, help="csv: no header row (columns are 0-based indexes)."),
            click.option(
                "--max-skipped",
                type=Share(),
                default=DEFAULT_MAX_SKIPPED,
                show_default=True,
                help=f"Largest share of bad rows accepted (0.01 or 1%); above it, or with no usable row, exit "
                f"{EXIT_UNUSABLE_LOG}.",
            ),
        ]
    ):
        f = option(f)
    return f


@cli.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["taobao", "movielens", "csv", "jsonl"]), required=True)
@click.option("--speed", type=float, default=None, help="Replay at N× real time (default: as fast as possible).")
@click.option("--limit", type=int, default=None, help="Only the first N rows of the file.")
@csv_options
@click.pass_context
def replay(
    ctx: click.Context,
    file: Path,
    fmt: str,
    speed: float | None,
    limit: int | None,
    columns: str | None,
    type_map: str | None,
    ts_format: str,
    delimiter: str,
    no_header: bool,
    max_skipped: float,
) -> None:
    """Publish an event log to Kafka in timestamp order (items before the events that use them)."""
    from streamrec.io.logs import publish

    mapping = _csv_mapping(fmt, columns, type_map, ts_format, delimiter, no_header)
    records = read_input(file, fmt, mapping, limit, max_skipped, need_events=False)
    sent = asyncio.run(publish(records, _settings(ctx).kafka, speed=speed, progress=True, total=len(records)))
    events = sum(r.topic == "events" for r in records)
    click.echo(f"published {sent} records ({events} events, {len(records) - events} item upserts)")


@cli.command("eval")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["taobao", "movielens", "csv", "jsonl"]), required=True)
@csv_options
@click.option("--k", "k", default=20, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), default=None, help="Windowed Recall@k plot (PNG).")
@click.option(
    "--systems",
    default=",".join(
        ("streamrec", "streamrec_no_learn", "popularity", "cooccurrence", "online_mf", "text_only", "sknn", "sasrec")
    ),
    show_default=True,
)
@click.option("--no-learn", is_flag=True, help="Freeze the ranker of the 'streamrec' system too.")
@click.option("--limit", type=int, default=None, help="Only the first N rows of the file.")
@click.option(
    "--jobs", type=int, default=os.cpu_count() or 1, show_default="CPU count", help="Systems replayed in parallel."
)
@click.option("--set", "overrides", multiple=True, help="Setting override, e.g. --set learning_rate=0.1 (repeatable).")
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Run streamrec as N workers (users split by partition)."
)
@click.option(
    "--sync-every", type=int, default=1_000, show_default=True, help="Events between the workers' model exchanges."
)
@click.option(
    "--protocol",
    type=click.Choice(["prequential", "published"]),
    default="prequential",
    show_default=True,
    help="published: score the lists streamrec publishes, replayed in micro-batches as a worker runs them "
    "(what a worker's online quality shows; streamrec systems only).",
)
@click.option(
    "--batch-size", type=int, default=1, show_default=True, help="Events per micro-batch of the published protocol."
)
@click.option(
    "--tune/--no-tune",
    default=True,
    show_default=True,
    help="Tune sknn on the first 20% of the events (its grid), then replay with the best point; else its defaults.",
)
@click.option(
    "--retrain-every",
    type=int,
    default=None,
    help="sasrec: events between retrains from scratch [default: 1/24 of the log's events].",
)
@click.option("--markdown", "markdown_out", type=click.Path(path_type=Path), default=None, help="Markdown tables here.")
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    file: Path,
    fmt: str,
    columns: str | None,
    type_map: str | None,
    ts_format: str,
    delimiter: str,
    no_header: bool,
    max_skipped: float,
    k: int,
    json_out: Path | None,
    plot_out: Path | None,
    systems: str,
    no_learn: bool,
    limit: int | None,
    jobs: int,
    overrides: tuple[str, ...],
    workers: int,
    sync_every: int,
    protocol: str,
    batch_size: int,
    tune: bool,
    retrain_every: int | None,
    markdown_out: Path | None,
) -> None:
    """Prequential (test-then-train) evaluation of streamrec and baselines on a log, in process."""
    from streamrec.lab.evaluation import (
        ALL_SYSTEMS,
        PUBLISHED,
        PUBLISHED_SYSTEMS,
        evaluate,
        format_table,
        markdown_report,
        plot,
    )
    from streamrec.lab.sasrec import SasrecParams
    from streamrec.settings import ENV_PREFIX

    env = dict(os.environ)
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--set expects name=value, got {item!r}")
        env[ENV_PREFIX + name.strip().upper()] = value.strip()
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if no_learn:
        settings = settings.replace(learn=False)
    limit_threads(settings.encoder.torch_threads)
    mapping = _csv_mapping(fmt, columns, type_map, ts_format, delimiter, no_header)
    records = read_input(file, fmt, mapping, limit, max_skipped, need_events=True)
    names = [n.strip() for n in systems.split(",") if n.strip()]
    unknown = set(names) - set(ALL_SYSTEMS)
    if unknown:
        raise click.UsageError(f"unknown system(s) {sorted(unknown)}; choose from {', '.join(ALL_SYSTEMS)}")
    if workers < 1 or sync_every < 1 or batch_size < 1 or (retrain_every is not None and retrain_every < 1):
        raise click.UsageError("--workers, --sync-every, --batch-size and --retrain-every must be >= 1")
    if protocol == PUBLISHED:
        if workers > 1:
            raise click.UsageError("--protocol published replays one worker: leave out --workers")
        if set(names) - set(PUBLISHED_SYSTEMS):
            names = [n for n in names if n in PUBLISHED_SYSTEMS] or ["streamrec"]
            click.echo(f"--protocol published: replaying {', '.join(names)} only", err=True)
    dataset = f"{file.name} ({fmt})" + (f", streamrec as {workers} workers" if workers > 1 else "")
    if protocol == PUBLISHED:
        dataset += f", published lists, batches of {batch_size}"
    params = {"sasrec": SasrecParams(retrain_every=retrain_every)} if retrain_every else {}
    report = evaluate(
        records,
        settings,
        names,
        k=k,
        dataset=dataset,
        jobs=jobs,
        workers=workers,
        sync_every=sync_every,
        protocol=protocol,
        batch_size=batch_size,
        tune=tune,
        params=params,
    )
    click.echo(format_table(report))
    click.echo(
        f"{report.events} events, {report.scored} discovery events scored, {report.events_per_s:,.0f} system-events/s"
    )
    if json_out:
        json_out.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    if plot_out:
        plot(report, plot_out)
    if markdown_out:
        markdown_out.write_text(markdown_report(report.to_dict()))


@cli.command()
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print the raw message.")
@click.pass_context
def recs(ctx: click.Context, user: str, as_json: bool) -> None:
    """Print USER's latest recommendations from the recommendations topic."""
    from streamrec.io.recommendations import latest_recommendation

    rec = asyncio.run(latest_recommendation(_settings(ctx).kafka, user))
    if rec is None:
        click.echo(f"no recommendations for {user!r} yet", err=True)
        sys.exit(1)
    if as_json:
        click.echo(orjson.dumps(rec, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{rec['kind']} recommendations for {user} (model {rec['model_version']}):")
    for rank, item in enumerate(rec["items"], start=1):
        click.echo(f"{rank:3}. {item['item_id']:<20} {item['score']:8.3f}  {'; '.join(item['reasons'])}")


async def publish_forget(settings: Settings, user_id: str) -> int:
    """Publish a ``forget_user`` request for ``user_id`` to every partition of the events topic; returns how many.

    Keyed by the user, once on each partition: on the partition that holds the user's events (the murmur2 one
    when producers are compatible) it takes effect in stream order, after everything they did before it and
    before anything they do after it; the copies on the other partitions reach state a producer with another
    partitioner left there, whichever worker owns it (docs/privacy.md).
    """
    from streamrec.io.kafka import make_producer
    from streamrec.model.events import FORGET_USER, Event, dumps

    request = dumps(Event(user_id, FORGET_USER, time.time()).to_dict())
    topic = settings.kafka.topic("events")
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        for p in partitions:
            await producer.send(topic, request, key=user_id.encode(), partition=p)
        await producer.flush()
    finally:
        await producer.stop()
    return len(partitions)


@cli.command()
@click.argument("user")
@click.pass_context
def forget(ctx: click.Context, user: str) -> None:
    """Delete everything kept about USER (privacy request): profile, state and recommendations.

    Publishes a forget_user event to every partition of events; the workers delete the user's profile wherever
    it is (a tombstone in the table's changelog), drop the user's in-memory state and publish a tombstone for
    them on recommendations.
    """
    from streamrec.model.events import MAX_ID_LEN

    if not 1 <= len(user) <= MAX_ID_LEN:
        raise click.UsageError(f"USER must have 1..{MAX_ID_LEN} characters")
    n = asyncio.run(publish_forget(_settings(ctx), user))
    click.echo(f"forget_user request for {user!r} published to {_settings(ctx).kafka.topic('events')} ({n} partitions)")


@cli.group()
def rules() -> None:
    """Business rules every worker applies to every list (the compacted rules topic; see README)."""


def _multipliers(pairs: tuple[str, ...], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise click.UsageError(f"{option} expects NAME=MULTIPLIER, got {pair!r}")
    return out


@rules.command("set")
@click.argument("name")
@click.option("--exclude-item", multiple=True, help="No list may hold this item (repeatable).")
@click.option("--exclude-category", multiple=True, help="No list may hold items of this category (repeatable).")
@click.option("--exclude-brand", multiple=True, help="No list may hold items of this brand (repeatable).")
@click.option("--boost-category", multiple=True, metavar="CATEGORY=M", help="Multiply the category's scores by M.")
@click.option("--boost-brand", multiple=True, metavar="BRAND=M", help="Multiply the brand's scores by M (<1 demotes).")
@click.option("--max-per-category", type=int, default=None, help="At most N items of one category per list.")
@click.option("--max-per-brand", type=int, default=None, help="At most N items of one brand per list.")
@click.option("--description", default=None, help="What the rule is for (shown by `rules list`).")
@click.option("--json", "as_json", default=None, help="The whole rule as JSON (topics/rules.json), instead of options.")
@click.pass_context
def rules_set(
    ctx: click.Context,
    name: str,
    exclude_item: tuple[str, ...],
    exclude_category: tuple[str, ...],
    exclude_brand: tuple[str, ...],
    boost_category: tuple[str, ...],
    boost_brand: tuple[str, ...],
    max_per_category: int | None,
    max_per_brand: int | None,
    description: str | None,
    as_json: str | None,
) -> None:
    """Set the rule NAME (replacing the rule of that name); every worker applies it within a couple of seconds."""
    from streamrec.io.rules import publish_rule
    from streamrec.model.events import InvalidMessage
    from streamrec.model.rules import rule_from_dict

    if as_json is not None:
        try:
            obj = orjson.loads(as_json)
        except orjson.JSONDecodeError as exc:
            raise click.UsageError(f"--json is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise click.UsageError("--json must be a JSON object")
    else:
        exclude = {"item_ids": list(exclude_item), "categories": list(exclude_category), "brands": list(exclude_brand)}
        boost = {
            "categories": _multipliers(boost_category, "--boost-category"),
            "brands": _multipliers(boost_brand, "--boost-brand"),
        }
        cap = {"per_category": max_per_category, "per_brand": max_per_brand}
        obj = {
            "exclude": {k: v for k, v in exclude.items() if v},
            "boost": {k: v for k, v in boost.items() if v},
            "cap": {k: v for k, v in cap.items() if v is not None},
        }
        obj = {k: v for k, v in obj.items() if v}
        if description is not None:
            obj["description"] = description
    obj.setdefault("ts", time.time())
    try:
        rule = rule_from_dict(name, obj)
    except InvalidMessage as exc:
        raise click.UsageError(f"invalid rule: {exc}") from None
    settings = _settings(ctx)
    asyncio.run(publish_rule(settings.kafka, name, rule))
    click.echo(f"rule {name!r} set on {settings.kafka.topic('rules')}: {orjson.dumps(rule.to_dict()).decode()}")


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rules as one JSON object by name.")
@click.pass_context
def rules_list(ctx: click.Context, as_json: bool) -> None:
    """Print the rules in force (and names whose newest value is invalid: workers keep their earlier rule)."""
    from streamrec.io.rules import read_rules

    found = asyncio.run(read_rules(_settings(ctx).kafka))
    if as_json:
        click.echo(orjson.dumps({n: r.to_dict() for n, r in sorted(found.rules.items())}, option=orjson.OPT_INDENT_2))
        return
    if not found.rules:
        click.echo("no rules in force")
    for name, rule in sorted(found.rules.items()):
        value = {k: v for k, v in rule.to_dict().items() if k != "ts"}
        click.echo(f"{name:24} {orjson.dumps(value).decode()}")
    for name, reason in sorted(found.rejected.items()):
        click.echo(f"{name:24} newest value invalid (dead-lettered by the workers): {reason}", err=True)


@rules.command("clear")
@click.argument("names", nargs=-1)
@click.option("--all", "clear_all", is_flag=True, help="Delete every rule in force.")
@click.pass_context
def rules_clear(ctx: click.Context, names: tuple[str, ...], clear_all: bool) -> None:
    """Delete the rules NAMES (a tombstone each), or every rule with --all."""
    from streamrec.io.rules import publish_rule, read_rules
    from streamrec.model.events import MAX_ID_LEN

    if bool(names) == clear_all:
        raise click.UsageError("give rule names or --all (not both)")
    settings = _settings(ctx)
    if clear_all:
        found = asyncio.run(read_rules(settings.kafka))
        names = tuple(sorted({*found.rules, *found.rejected}))
    for name in names:
        if not 1 <= len(name) <= MAX_ID_LEN:
            raise click.UsageError(f"a rule name has 1..{MAX_ID_LEN} characters, got {name!r}")
        asyncio.run(publish_rule(settings.kafka, name, None))
    click.echo(f"cleared {len(names)} rule(s){': ' + ', '.join(names) if names else ''}")


@cli.command()
@click.option("--dataset", type=click.Path(exists=True, path_type=Path), default=None, help="Replay a real log.")
@click.option("--format", "fmt", type=click.Choice(["taobao", "movielens", "jsonl"]), default="taobao")
@click.option("--limit", type=int, default=20_000, show_default=True, help="Rows of --dataset to replay.")
@click.option("--users", type=int, default=60, show_default=True, help="Synthetic users.")
@click.option("--events", "n_events", type=int, default=6_000, show_default=True, help="Synthetic events.")
@click.option("--rate", type=float, default=300.0, show_default=True, help="Events/s for the latency phase.")
@click.option("--keep-running", is_flag=True, help="Keep everything up afterwards (dashboard included) until Ctrl-C.")
@click.option(
    "--live-rate", type=float, default=20.0, show_default=True, help="Synthetic events/s sent while kept running."
)
@click.pass_context
def demo(
    ctx: click.Context,
    dataset: Path | None,
    fmt: str,
    limit: int,
    users: int,
    n_events: int,
    rate: float,
    keep_running: bool,
    live_rate: float,
) -> None:
    """Start everything locally (broker, encoder, worker, dashboard), stream a catalogue and events, print
    recommendations and figures."""
    from streamrec.lab.demo import DemoOptions, run_demo

    if live_rate < 0:
        raise click.UsageError("--live-rate must be >= 0")
    opts = DemoOptions(
        dataset=dataset,
        fmt=fmt,
        limit=limit,
        users=users,
        events=n_events,
        rate=rate,
        keep_running=keep_running,
        live_rate=live_rate,
    )
    code = run_demo(_settings(ctx), opts)
    sys.exit(code)


@cli.command()
@click.option("--url", default=None, help="A worker's /metrics page (default: this machine's worker, from settings).")
@click.pass_context
def status(ctx: click.Context, url: str | None) -> None:
    """Print a running worker's metrics: events, lag, latency, dead letters, model, items."""
    import urllib.error
    import urllib.request

    from streamrec.worker.telemetry import format_status, parse

    settings = _settings(ctx)
    url = url or f"http://{settings.web.web_host}:{settings.web.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            samples = parse(resp.read().decode())
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"no worker answering at {url}: {exc}") from None
    click.echo(format_status(samples))


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default STREAMREC_DASHBOARD_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default STREAMREC_DASHBOARD_PORT, 8050).")
@click.option(
    "--workers",
    default=None,
    help="Worker base URLs, comma separated (default STREAMREC_DASHBOARD_WORKERS; empty: found on model-snapshots).",
)
@click.pass_context
def dashboard(ctx: click.Context, host: str | None, port: int | None, workers: str | None) -> None:
    """Serve the live, read-only dashboard: throughput, lag, latency, quality, model, dead letters, users, items."""
    from streamrec.dashboard.server import run_dashboard

    given = {"dashboard_host": host, "dashboard_port": port, "dashboard_workers": workers}
    try:
        settings = _settings(ctx).replace(**{k: v for k, v in given.items() if v is not None})
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run_dashboard(settings)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        web = settings.web
        raise click.ClickException(f"cannot listen on {web.dashboard_host}:{web.dashboard_port}: {exc}") from None


DEFAULT_TAOBAO = Path("../shared/datasets/taobao-userbehavior-sample/UserBehavior_head.csv")


def taobao_option(flag: str, help_text: str) -> Any:
    """A path option that defaults to the Taobao sample in ``../shared`` (the bench's and chaos's input)."""
    return click.option(
        flag, type=click.Path(path_type=Path), default=DEFAULT_TAOBAO, show_default=True, help=help_text
    )


@cli.command()
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write all figures here.")
@click.option("--items", type=int, default=50_000, show_default=True, help="Synthetic catalogue size.")
@click.option("--users", type=int, default=20_000, show_default=True, help="Synthetic users.")
@click.option("--events", "n_events", type=int, default=150_000, show_default=True, help="Backlog of events.")
@click.option("--rate", type=float, default=500.0, show_default=True, help="Offered events/s, latency phase.")
@click.option("--latency-seconds", type=float, default=20.0, show_default=True, help="Length of the latency phase.")
@taobao_option("--taobao", "Taobao sample to drain as well (skipped when absent).")
@click.option("--taobao-limit", type=int, default=200_000, show_default=True, help="Rows of the Taobao sample.")
@click.option(
    "--encoder-processes",
    type=int,
    default=None,
    help="Encoder processes timed together (default: one per core, as STREAMREC_ENCODER_PROCESSES would run).",
)
@click.option("--quick", is_flag=True, help="A CI-sized run: small inputs, every figure (the other sizes ignored).")
@click.option("--withdrawals", type=int, default=20, show_default=True, help="Most-listed items withdrawn and timed.")
@click.option(
    "--only",
    type=click.Choice(["latency"]),
    default=None,
    help="Only these phases: 'latency' drains the backlog, then times the transport and the worker at --rate "
    "(latency_over_transport_p99), skipping the encoder, floor, freshness, Taobao and evaluation phases.",
)
@click.pass_context
def bench(
    ctx: click.Context,
    json_out: Path | None,
    items: int,
    users: int,
    n_events: int,
    rate: float,
    latency_seconds: float,
    taobao: Path,
    taobao_limit: int,
    encoder_processes: int | None,
    quick: bool,
    withdrawals: int,
    only: str | None,
) -> None:
    """The worker against its Faust floor and the transport (ratios), then throughput, latency, encoder speed,
    item freshness, withdrawals and memory on this machine, on the local broker (docs/performance.md)."""
    from streamrec.lab.bench import BenchOptions, run_bench

    if not taobao.exists():
        click.echo(f"Taobao sample not found at {taobao}: measuring the synthetic stream only", err=True)
    sample = taobao if taobao.exists() else None
    processes: dict[str, Any] = {"encoder_processes": encoder_processes} if encoder_processes else {}
    processes["latency_only"] = only == "latency"
    if quick:
        opts = dataclasses.replace(BenchOptions.quick(sample), **processes)
    else:
        opts = BenchOptions(
            items=items,
            users=users,
            events=n_events,
            latency_rate=rate,
            latency_s=latency_seconds,
            taobao=sample,
            taobao_limit=taobao_limit,
            withdrawals=withdrawals,
            **processes,
        )
    run_bench(_settings(ctx), opts, json_out)


@cli.command()
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@taobao_option("--dataset", "The Taobao UserBehavior log to replay.")
@click.option("--limit", type=int, default=None, help="Only the first N rows of the log (default: all).")
@click.option(
    "--replay-seconds",
    type=float,
    default=300.0,
    show_default=True,
    help="Events are paced over this long (keep the rate below what the two workers sustain; see docs/resilience.md).",
)
@click.option("--kill-at", type=float, default=0.3, show_default=True, help="Share of events sent at the kill.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="Logs here (default: a temp dir).")
@click.pass_context
def chaos(
    ctx: click.Context,
    json_out: Path | None,
    dataset: Path,
    limit: int | None,
    replay_seconds: float,
    kill_at: float,
    workdir: Path | None,
) -> None:
    """Crash + scale-out on the local broker: 2 workers, kill -9 one mid-replay, restart it, count per user.

    Exits non-zero unless every event was applied exactly once (lost == 0 and duplicates_applied == 0).
    """
    import tempfile

    from streamrec.lab.chaos import ChaosOptions, run_chaos

    if not dataset.exists():
        raise click.UsageError(f"dataset not found: {dataset}")
    opts = ChaosOptions(dataset=dataset, limit=limit, replay_s=replay_seconds, kill_at=kill_at)
    with tempfile.TemporaryDirectory(prefix="streamrec-chaos-") as tmp:
        folder = workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run_chaos(_settings(ctx), opts, folder))
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    if json_out:
        json_out.write_bytes(text)
    click.echo(text.decode())
    if report["lost"] or report["duplicates_applied"] or report["events_applied"] != report["events_in"]:
        sys.exit(1)


def main() -> None:
    cli(prog_name="streamrec")


if __name__ == "__main__":
    main()
