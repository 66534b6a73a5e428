from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.io.logs import Record
from streamrec.lab.evaluation import StreamrecSystem, _Job, _replay, evaluate
from streamrec.model.events import Event, Item, ItemEmbedding
from streamrec.settings import Settings


class Spy:
    """Remembers every call; recommends the user's *last learned* item — a cheat if learning leaked."""

    name = "spy"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        self.last: dict[str, str] = {}

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self.calls.append(("upsert", emb.item.item_id, None))

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        self.calls.append(("recommend", user_id, None))
        return [self.last[user_id]] if user_id in self.last else []

    def learn(self, event: Event) -> None:
        self.calls.append(("learn", event.user_id, event.item_id))
        if event.item_id:
            self.last[event.user_id] = event.item_id


def records() -> list[Record]:
    out = [Record("items", f"i{n}", Item(f"i{n}", "", 0.0, category="7").to_dict(), 0.0) for n in range(3)]
    seq = [("u", "i0"), ("u", "i1"), ("u", "i1"), ("v", "i1"), ("u", "i2")]
    for t, (user, item) in enumerate(seq, start=1):
        out.append(Record("events", user, Event(user, "click", float(t), item_id=item).to_dict(), float(t)))
    return out


def job(recs: list[Record]) -> _Job:
    s = Settings.of(embedding_dim=8)
    embs = {
        i: ItemEmbedding(Item(r.key, "", 0.0, category="c"), np.ones(8, np.float32) / np.sqrt(8), "m", "category")
        for i, r in enumerate(recs)
        if r.topic == "items"
    }
    return _Job(recs, embs, s, 20, False)


def test_every_event_is_scored_before_it_is_learned() -> None:
    spy = Spy()
    ranks, discoveries, _, _ = _replay(spy, job(records()))
    event_calls = [c for c in spy.calls if c[0] != "upsert"]
    # strictly alternating: recommend for the event's user, then learn that event
    assert [c[0] for c in event_calls] == ["recommend", "learn"] * 5
    assert all(a[1] == b[1] for a, b in zip(event_calls[::2], event_calls[1::2], strict=True))
    # the cheat (recommend what was just learned) only "hits" on true repeats, never on discoveries
    assert discoveries == [True, True, False, True, True]
    assert ranks == [None, None, 1, None, None]


@pytest.mark.timeout(300)
def test_evaluate_reports_every_system_and_the_counts(taobao_path: Path) -> None:
    import faiss

    from streamrec.io.logs import read_log

    # the parent has a live 2-thread OpenMP pool when it forks (as after any multi-threaded FAISS search):
    # the forked systems must still finish rather than wait for pool threads that do not exist in them
    faiss.omp_set_num_threads(2)
    index = faiss.IndexFlatIP(16)
    index.add(np.ones((1000, 16), np.float32))
    index.search(np.ones((200, 16), np.float32), 5)
    recs = list(read_log(taobao_path, "taobao", limit=1500))
    settings = Settings()
    report = evaluate(recs, settings, ["streamrec", "popularity", "cooccurrence"], k=20, progress=False, jobs=2)
    assert report.events == 1500
    assert set(report.systems) == {"streamrec", "popularity", "cooccurrence"}
    assert report.scored == sum(1 for _ in {(r.key, r.value["item_id"]) for r in recs if r.topic == "events"})
    for metrics in report.systems.values():
        assert 0.0 <= metrics["ndcg"] <= metrics["recall"] <= 1.0
        assert metrics["scored_all"] == 1500
        assert 0.0 < metrics["coverage"] <= 1.0 and 0.0 < metrics["diversity"] <= 1.0
        assert 0.0 <= metrics["new_exposure"] <= 1.0 and metrics["novelty"] > 0.0
    # one list for everyone reaches few items: streamrec's personal lists cover more of the catalogue
    assert report.systems["popularity"]["coverage"] < report.systems["streamrec"]["coverage"]
    assert report.systems["popularity"]["novelty"] < report.systems["streamrec"]["novelty"]


def test_streamrec_system_is_the_production_core() -> None:
    from streamrec.model.recommender import Recommender

    system = StreamrecSystem(Settings.of(embedding_dim=8))
    assert type(system.recommender) is Recommender


def test_sharded_system_routes_users_by_partition_and_shares_one_model() -> None:
    from streamrec.lab.evaluation import ShardedStreamrecSystem, partition_of

    system = ShardedStreamrecSystem(Settings.of(embedding_dim=8), workers=2, sync_every=3)
    users = [str(u) for u in range(12)]
    # Kafka's default partitioner (murmur2): the same users the producers send to partition p
    assert {u: partition_of(u, 6) for u in ["1", "100", "1000"]} == {"1": 3, "100": 3, "1000": 4}
    for u in users:
        assert system.shard(u) is system.shards[partition_of(u, 6) % 2]
    recs = records()
    for i, r in enumerate(recs):
        if r.topic == "items":
            system.upsert_item(job(recs).embeddings[i])
    assert all(len(s.recommender.catalog) == 3 for s in system.shards)  # every worker holds every item
    for r in recs:
        if r.topic == "events":
            system.learn(Event(r.value["user_id"], "click", r.ts, item_id=r.value["item_id"]))
    assert system.syncs == 1  # 5 events, an exchange every 3
    owner = {u: system.shard(u) for u in ("u", "v")}
    for user, shard in owner.items():
        assert shard.store.get(user) is not None
        assert all(s.store.get(user) is None for s in system.shards if s is not shard)
    # item statistics are shared: the worker without v still learned that v's item is popular
    v_owner = owner["v"]
    other = next(s for s in system.shards if s is not v_owner)
    for shard in (v_owner, other):
        row = shard.recommender.catalog.row_of["i1"]
        assert shard.recommender.catalog.popularity[row] > 0
    system.sync()
    a, b = (m.ranker for m in system.models)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.steps == b.steps


QUALITY_ROWS = 6_000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_rank_as_well_as_one_on_taobao(taobao_path: Path) -> None:
    """Issue 5: a 2-worker deployment (users split by partition, one shared ranker) is within 3% of 1 worker."""
    from streamrec.io.logs import read_log

    recs = list(read_log(taobao_path, "taobao", limit=QUALITY_ROWS))
    one = evaluate(recs, Settings(), ["streamrec"], progress=False).systems["streamrec"]
    two = evaluate(recs, Settings(), ["streamrec"], progress=False, workers=2).systems["streamrec"]
    for metric in ("recall", "ndcg"):
        assert abs(two[metric] - one[metric]) <= 0.03 * one[metric], (metric, one[metric], two[metric])


def textless_shop(n_events: int) -> list[Record]:
    """A synthetic shop's log whose items have no text (numeric categories): embedded without the text model."""
    import dataclasses

    from streamrec.lab.synthetic import make_events, make_shop

    shop = make_shop(60, 30)
    items = [
        dataclasses.replace(item, title="", description="", brand=None, category=str(n % 6))
        for n, item in enumerate(shop.items)
    ]
    events = [e for e in make_events(shop, n_events) if e.type != "search"]
    return [Record("items", i.item_id, i.to_dict(), i.ts) for i in items] + [
        Record("events", e.user_id, e.to_dict(), e.ts) for e in events
    ]


def test_in_the_prequential_protocol_the_core_scores_the_very_lists_the_harness_scores() -> None:
    from streamrec.lab.evaluation import embed_catalog
    from streamrec.model.events import item_from_dict

    recs = textless_shop(400)
    settings = Settings.of(top_k=10)
    items = [i for i, r in enumerate(recs) if r.topic == "items"]
    embedded = embed_catalog([item_from_dict(recs[i].value) for i in items], settings)
    system = StreamrecSystem(settings)
    ranks, _, _, _ = _replay(system, _Job(recs, dict(zip(items, embedded, strict=True)), settings, 10, False))
    counts = system.recommender.online.counts()
    # the harness asks for a list (remembered, as published) right before each event: the core scores that list
    assert counts.since_start.sum() == len(ranks) == len(recs) - len(items)
    hit_ranks = [0] * 10
    for rank in ranks:
        if rank is not None:
            hit_ranks[rank - 1] += 1
    assert [sum(col) for col in zip(*counts.hit_ranks().values(), strict=True)] == hit_ranks
    assert sum(hit_ranks) > 20


def scored_in_batches(recs: list[Record], batch_size: int) -> int:
    """Item events whose user was published a list before the event's batch (had an event in an earlier one)."""
    events = [r.key for r in recs if r.topic == "events"]
    seen: set[str] = set()
    scored = 0
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        scored += sum(user in seen for user in batch)
        seen.update(batch)
    return scored


def test_the_published_protocol_replays_the_worker_core_in_batches() -> None:
    recs = textless_shop(300)
    n_events = sum(r.topic == "events" for r in recs)
    settings = Settings.of(top_k=10)
    one = evaluate(recs, settings, ["streamrec", "streamrec_no_learn"], k=10, progress=False, protocol="published")
    assert (one.protocol, one.batch_size, one.events) == ("published", 1, n_events)
    for figures in one.systems.values():
        assert figures["scored_all"] == scored_in_batches(recs, 1) < n_events  # each user's first: no list yet
        assert 0.0 < figures["recall"] <= 1.0 and figures["scored"] == one.scored
    assert one.systems["streamrec"] != one.systems["streamrec_no_learn"]
    # bigger batches: a user's events in one batch are all scored against the list from before the batch
    batched = evaluate(recs, settings, ["streamrec"], k=10, progress=False, protocol="published", batch_size=100)
    assert batched.systems["streamrec"]["scored_all"] == scored_in_batches(recs, 100) < scored_in_batches(recs, 1)
    with pytest.raises(ValueError, match="replays"):
        evaluate(recs, settings, ["popularity"], progress=False, protocol="published")


def toy_log(users: int = 12) -> list[Record]:
    """Three text-less items (hashed embeddings); each user views i0, i1, i2 in turn, a minute apart."""
    out = [Record("items", f"i{n}", Item(f"i{n}", "", 0.0, category="7").to_dict(), 0.0) for n in range(3)]
    t = 0.0
    for u in range(users):
        for n in range(3):
            t += 60.0
            out.append(Record("events", f"u{u}", Event(f"u{u}", "view", t, item_id=f"i{n}").to_dict(), t))
    return out


def test_halves_split_the_discovery_events_in_two() -> None:
    from streamrec.lab.evaluation import halves

    # discovery ranks: 1, None | None, 3 (the repeat at index 2 is not a discovery)
    out = halves([1, None, 2, None, 3], [True, True, False, True, True])
    assert out["first_half"] == {"recall": 0.5, "ndcg": 0.5, "mrr": 0.5, "scored": 2}
    assert out["second_half"] == {"recall": 0.5, "ndcg": 0.25, "mrr": 1 / 6, "scored": 2}


def test_the_report_has_per_half_figures_and_the_tuned_parameters() -> None:
    import math

    from streamrec.lab.sknn import SKNN_GRID

    recs = toy_log()
    report = evaluate(recs, Settings.of(embedding_dim=8), ["popularity", "sknn"], k=2, progress=False).to_dict()
    assert report["events"] == 36 and report["scored"] == 36
    for figures in report["systems"].values():
        # the keys others read stay, the halves come beside them
        assert {"recall", "ndcg", "mrr", "recall_all", "ndcg_all", "mrr_all", "scored_all"} <= figures.keys()
        first, second = figures["first_half"], figures["second_half"]
        assert first["scored"] == second["scored"] == 18
        assert figures["recall"] == (first["recall"] + second["recall"]) / 2
    tuning = report["tuning"]["sknn"]
    assert tuning["prefix_events"] == math.ceil(0.2 * 36) == 8
    assert [{k: row[k] for k in ("k", "sample", "decay")} for row in tuning["grid"]] == [
        {"k": p.k, "sample": p.sample, "decay": p.decay} for p in SKNN_GRID
    ]
    best = max(tuning["grid"], key=lambda row: (row["recall"], row["ndcg"]))
    assert {k: tuning["chosen"][k] for k in ("k", "sample", "decay")} == {k: best[k] for k in ("k", "sample", "decay")}
    assert report["systems"]["sknn"]["params"] == tuning["chosen"]
    # without tuning: sknn's defaults, no tuning entry
    plain = evaluate(recs, Settings.of(embedding_dim=8), ["sknn"], k=2, progress=False, tune=False).to_dict()
    assert plain["tuning"] == {}
    assert plain["systems"]["sknn"]["params"]["k"] == 100


def test_sknn_is_tuned_on_the_prefix_only() -> None:
    """Two logs with the same first 20% of events and different rests tune alike: the grid sees only the prefix."""
    from streamrec.lab.evaluation import prefix_stop

    recs = toy_log()
    stop = prefix_stop(recs, 0.2)
    assert stop == 3 + 8  # the three item upserts, then 8 of the 36 events
    other_rest = [
        Record("events", f"z{n}", Event(f"z{n}", "view", 9e3 + n, item_id="i2").to_dict(), 9e3 + n) for n in range(28)
    ]
    a = evaluate(recs, Settings.of(embedding_dim=8), ["sknn"], k=2, progress=False).to_dict()["tuning"]["sknn"]
    b = evaluate(recs[:stop] + other_rest, Settings.of(embedding_dim=8), ["sknn"], k=2, progress=False).to_dict()
    assert a["prefix_events"] == b["tuning"]["sknn"]["prefix_events"] == 8
    assert [(r["recall"], r["ndcg"]) for r in a["grid"]] == [
        (r["recall"], r["ndcg"]) for r in b["tuning"]["sknn"]["grid"]
    ]


def test_ratio_and_best_baseline_on_a_toy_report() -> None:
    from streamrec.lab.evaluation import best_baseline, markdown_results, markdown_summary, ratio

    def figures(recall: float, ndcg: float, second: float) -> dict[str, object]:
        half = {"recall": second, "ndcg": ndcg, "mrr": ndcg, "scored": 5}
        return {
            "recall": recall,
            "ndcg": ndcg,
            "mrr": ndcg,
            "recall_all": recall,
            "first_half": half,
            "second_half": half,
        }

    report = {
        "k": 20,
        "systems": {
            "streamrec": figures(0.30, 0.12, 0.33),
            "streamrec_no_learn": figures(0.50, 0.50, 0.50),  # never a baseline, however good
            "sknn": figures(0.25, 0.10, 0.20),
            "sasrec": figures(0.20, 0.11, 0.30),
        },
        "seconds": {"streamrec": 1.0, "streamrec_no_learn": 1.0, "sknn": 1.0, "sasrec": 1.0},
    }
    assert best_baseline(report, "recall") == "sknn"
    assert best_baseline(report, "ndcg") == "sasrec"
    assert best_baseline(report, "recall", "second_half") == "sasrec"
    assert ratio(report, "streamrec", "sknn", "recall") == 0.30 / 0.25
    assert ratio(report, "streamrec", "sasrec", "recall", "second_half") == 0.33 / 0.30
    table = markdown_results(report)
    assert table.splitlines()[2].startswith("| streamrec_no_learn | 0.5000 |")
    assert "overall 1.20× Recall@20 (`sknn`) and 1.09× NDCG@20 (`sasrec`)" in table
    assert "second half 1.10× Recall@20 (`sasrec`)" in table
    other = {"k": 20, "systems": {"streamrec": figures(0.10, 0.05, 0.10), "popularity": figures(0.02, 0.01, 0.01)}}
    summary = markdown_summary({"shop": report, "films": other}).splitlines()
    assert summary[0] == "| system | shop Recall@20 | shop NDCG@20 | films Recall@20 | films NDCG@20 |"
    assert summary[2] == "| **streamrec** | 0.3000 | 0.1200 | 0.1000 | 0.0500 |"
    assert summary[4] == "| sknn | 0.2500 | 0.1000 |  |  |"  # a system one log did not replay
    assert summary[-1] == (
        "streamrec against the best baseline: shop: 1.20× Recall (`sknn`), 1.09× NDCG (`sasrec`), learning 0.60× "
        "the frozen ranker (0.66× over the second half); films: 5.00× Recall (`popularity`), 5.00× NDCG (`popularity`)."
    )


def test_parallel_replays_tune_and_score_as_one_process_does() -> None:
    recs = toy_log()
    names = ["sknn", "popularity", "cooccurrence"]
    one = evaluate(recs, Settings.of(embedding_dim=8), names, k=2, progress=False, jobs=1).to_dict()
    two = evaluate(recs, Settings.of(embedding_dim=8), names, k=2, progress=False, jobs=2).to_dict()
    assert list(two["systems"]) == names
    assert two["systems"] == one["systems"]
    assert [r["recall"] for r in two["tuning"]["sknn"]["grid"]] == [r["recall"] for r in one["tuning"]["sknn"]["grid"]]


def test_generated_tables_replace_only_their_own_block() -> None:
    from streamrec.lab.evaluation import splice

    doc = (
        "intro\n<!-- begin eval-a -->\nold a\n<!-- end eval-a -->\n"
        "middle\n<!-- begin eval-b -->\nold b\n<!-- end eval-b -->\n"
    )
    out = splice(doc, "eval-b", "new b\n")
    assert out == doc.replace("old b", "new b")
    with pytest.raises(ValueError, match="eval-c"):
        splice(doc, "eval-c", "x")


def test_sasrec_retrains_24_times_per_replay_and_reports_its_training_time() -> None:
    from streamrec.lab.sasrec import SasrecParams

    tiny = SasrecParams(dim=8, max_len=4, blocks=1, epochs=1, batch=8)
    report = evaluate(
        toy_log(), Settings.of(embedding_dim=8), ["sasrec"], k=2, progress=False, params={"sasrec": tiny}
    ).to_dict()
    training = report["training"]["sasrec"]
    assert training["retrain_every"] == 2  # ceil(36 events / 24)
    assert [r["events"] for r in training["per_retrain"]] == list(range(2, 37, 2))
    assert report["systems"]["sasrec"]["train_seconds"] == training["train_seconds"] > 0
    assert training["train_seconds"] == sum(r["seconds"] for r in training["per_retrain"])
    assert report["systems"]["sasrec"]["params"]["dim"] == 8
