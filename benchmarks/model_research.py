"""Model research loop: replay streamrec (prequential, discovery events, k=20) with setting overrides, fast.

Caches each log's records and item embeddings under ``--cache`` so a run costs only the replay, and reports
per run: Recall/NDCG/MRR overall and per half of the discovery events, candidate recall (the share of
discovery events whose item was in the pool the ranker scored), and the replay's wall and CPU seconds.
``--tail`` keeps only the later share of the log's events (the whole catalogue stays), for the "later half of
a log" robustness check.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/model_research.py movielens --limit 30000 \
        --run base: --run nolearn:learn=false --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from streamrec.encoding.threads import limit_threads
from streamrec.io.logs import CsvMapping, read_log
from streamrec.lab.evaluation import StreamrecSystem, embed_catalog
from streamrec.model.events import ITEM_EVENT_TYPES, event_from_dict, item_from_dict
from streamrec.model.metrics import hit_rank, mrr_at_rank, ndcg_at_rank
from streamrec.model.ranker import FEATURES, PRIOR_WEIGHTS
from streamrec.settings import ENV_PREFIX, Settings

DATASETS = {
    "movielens": ("/work/shared/datasets/movielens-100k", "movielens"),
    "taobao": ("/work/shared/datasets/taobao-userbehavior-sample/UserBehavior_head.csv", "taobao"),
    "ecommerce": ("tests/fixtures/ecommerce_events.csv", "csv"),
}
ECOMMERCE_MAPPING = dict(
    user="user_id",
    item="product_id",
    type="event_type",
    ts="event_time",
    category="category_code",
    brand="brand",
    price="price",
    session="user_session",
)
ECOMMERCE_TYPES = "view=view,cart=add_to_cart,purchase=purchase,remove_from_cart=drop"
K = 20
PRIOR = "prior_"
_DEFAULT_PRIORS = dict(PRIOR_WEIGHTS)
_STATE: dict[str, Any] = {}


def load(name: str, limit: int | None, cache: Path) -> tuple[list[Any], dict[int, Any]]:
    """Records and embeddings of a named log (or a jsonl path), cached."""
    path, fmt = DATASETS.get(name, (name, "jsonl"))
    key = hashlib.sha1(f"{path}|{fmt}|{limit}".encode()).hexdigest()[:12]
    cached = cache / f"{Path(name).stem}-{key}.pkl"
    if cached.exists():
        return pickle.loads(cached.read_bytes())
    mapping = None
    if fmt == "csv":
        mapping = CsvMapping.from_options(
            ",".join(f"{k}={v}" for k, v in ECOMMERCE_MAPPING.items()), ECOMMERCE_TYPES, "auto", ",", True
        )
    records = list(read_log(path, fmt, mapping=mapping, limit=limit))
    idx = [i for i, r in enumerate(records) if r.topic == "items"]
    embedded = embed_catalog([item_from_dict(records[i].value) for i in idx], Settings())
    out = (records, dict(zip(idx, embedded, strict=True)))
    cache.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(pickle.dumps(out))
    return out


def tail(records: list[Any], share: float) -> list[Any]:
    """The catalogue plus the last ``share`` of the events (the log read from its middle on)."""
    events = [i for i, r in enumerate(records) if r.topic != "items"]
    cut = events[int(len(events) * (1.0 - share))]
    return [r for i, r in enumerate(records) if r.topic == "items" or i >= cut]


def head(records: list[Any], events: int) -> list[Any]:
    """The catalogue plus the first ``events`` events (a shorter screen from a cached longer prefix)."""
    kept = 0
    out = []
    for r in records:
        if r.topic != "items":
            if kept >= events:
                continue
            kept += 1
        out.append(r)
    return out


def settings_of(spec: str) -> Settings:
    """Settings from ``name=value`` pairs; ``prior_<feature>=w`` sets the ranker's starting weight instead."""
    env = dict(os.environ)
    PRIOR_WEIGHTS.update(_DEFAULT_PRIORS)
    for part in filter(None, spec.split(",")):
        name, _, value = part.partition("=")
        name = name.strip()
        if name.startswith(PRIOR):
            PRIOR_WEIGHTS[name[len(PRIOR) :]] = float(value)
            continue
        env[ENV_PREFIX + name.upper()] = value.strip()
    return Settings.from_env(env)


def replay(label: str, spec: str) -> dict[str, Any]:
    records, embeddings = _STATE["records"], _STATE["embeddings"]
    system = StreamrecSystem(settings_of(spec))
    rec = system.recommender
    seen: set[tuple[str, str]] = set()
    ranks: list[int | None] = []
    in_pool: list[bool] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i, record in enumerate(records):
        if record.topic == "items":
            system.upsert_item(embeddings[i])
            continue
        event = event_from_dict(record.value)
        if event.is_forget:
            continue
        if event.type in ITEM_EVENT_TYPES and event.item_id is not None:
            pair = (event.user_id, event.item_id)
            discovery = pair not in seen
            seen.add(pair)
            ranked = system.recommend(event.user_id, event.ts, K)
            if discovery:
                ranks.append(hit_rank(event.item_id, ranked))
                pool = rec.offers.pool(event.user_id)
                row = rec.catalog.row_of.get(event.item_id, -1)
                in_pool.append(pool is not None and row in pool)
        system.learn(event)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    half = len(ranks) // 2
    out: dict[str, Any] = {"label": label, "spec": spec, "n": len(ranks), "s": round(secs, 1), "cpu": round(cpu, 1)}
    for part, rs, pools in (
        ("all", ranks, in_pool),
        ("h1", ranks[:half], in_pool[:half]),
        ("h2", ranks[half:], in_pool[half:]),
    ):
        n = max(len(rs), 1)
        out[part] = {
            "recall": sum(r is not None for r in rs) / n,
            "ndcg": sum(ndcg_at_rank(r) for r in rs) / n,
            "mrr": sum(mrr_at_rank(r) for r in rs) / n,
            "pool": sum(pools) / n,
        }
    weights = zip(FEATURES, rec.ranker.weights.tolist(), strict=True)
    out["weights"] = {k: round(v, 3) for k, v in weights}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("log")
    p.add_argument("--limit", type=int)
    p.add_argument("--tail", type=float, help="keep only this last share of the events")
    p.add_argument("--head", type=int, help="keep only the first this many events (after --limit)")
    p.add_argument("--run", action="append", default=[], help="label:setting=value,setting=value")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--cache", type=Path, default=Path("/tmp/research-cache"))
    p.add_argument("--out", type=Path, help="append JSON lines here")
    args = p.parse_args()
    limit_threads(1)
    records, embeddings = load(args.log, args.limit, args.cache)
    if args.head:
        records = head(records, args.head)
    if args.tail:
        records = tail(records, args.tail)
    _STATE.update(records=records, embeddings=embeddings)
    runs = [tuple(r.split(":", 1)) for r in args.run] or [("base", "")]
    if args.jobs > 1 and len(runs) > 1:
        with multiprocessing.get_context("fork").Pool(min(args.jobs, len(runs))) as pool:
            results = pool.starmap(replay, runs, chunksize=1)
    else:
        results = [replay(label, spec) for label, spec in runs]
    for r in results:
        line = (
            f"{r['label']:24} R={r['all']['recall']:.4f} N={r['all']['ndcg']:.4f} M={r['all']['mrr']:.4f} "
            f"| h1 R={r['h1']['recall']:.4f} N={r['h1']['ndcg']:.4f} | h2 R={r['h2']['recall']:.4f} "
            f"N={r['h2']['ndcg']:.4f} | pool={r['all']['pool']:.3f} n={r['n']} {r['s']}s cpu={r['cpu']}s"
        )
        print(line, flush=True)
        print("   ", r["weights"], flush=True)
        if args.out:
            with args.out.open("ab") as f:
                f.write(
                    orjson.dumps({"log": args.log, "limit": args.limit, "head": args.head, "tail": args.tail, **r})
                    + b"\n"
                )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
