from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.candidates import candidate_pools
from streamrec.model.events import Event, Item, ItemEmbedding
from streamrec.model.profiles import DictProfileStore
from streamrec.model.ranker import FEATURES
from streamrec.model.recommender import Recommender
from streamrec.settings import Settings

DIM = 8
CATS = ("shoes", "coffee", "books")


def build(settings: Settings | None = None, n_per_cat: int = 10) -> Recommender:
    """A catalogue whose embeddings cluster by category (unit directions + noise); lists by relevance alone
    (exploration slots are tested in ``test_lists.py``)."""
    s = settings or Settings.of(embedding_dim=DIM, top_k=5, seed=1, exploration_slots=0)
    rec = Recommender(s)
    rng = np.random.default_rng(0)
    centres = {c: np.eye(DIM)[i] for i, c in enumerate(CATS)}
    for c in CATS:
        for j in range(n_per_cat):
            v = centres[c] + 0.2 * rng.normal(size=DIM)
            item = Item(f"{c}-{j}", f"{c} {j}", ts=0.0, category=c, price=10.0 + j)
            rec.upsert_item(ItemEmbedding(item, v.astype(np.float32), "m", "text"))
    return rec


def cat_of(item_id: str) -> str:
    return item_id.split("-")[0]


def test_user_gets_their_category_and_purchases_are_excluded() -> None:
    rec = build()
    store = DictProfileStore()
    events = [Event("u", t, float(i), item_id=f"coffee-{i}") for i, t in enumerate(["view", "click", "purchase"])]
    result = rec.process(events, store)
    assert result.applied == 3 and result.duplicates == 0
    [out] = result.recommendations
    assert out.user_id == "u" and out.kind == "behaviour" and out.event_ts == 2.0
    ids = [i.item_id for i in out.items]
    assert len(ids) == 5 and {cat_of(i) for i in ids} == {"coffee"}
    assert not {"coffee-0", "coffee-1", "coffee-2"} & set(ids)  # just seen / purchased
    assert rec.last_offered("u") == ids  # remembered for negatives, in memory
    assert b'"s"' not in store.get("u").to_bytes()  # not in the stored profile
    assert out.model_version == "fusion@0"  # nothing was offered before: nothing to learn against yet
    taken = ids[2]
    [again] = rec.process([Event("u", "click", 3.0, item_id=taken)], store).recommendations
    assert again.model_version == "fusion@1" and rec.ranker.steps == 1
    assert taken not in [i.item_id for i in again.items]


def test_a_list_leaves_out_every_item_among_the_users_recent_ones() -> None:
    # a user who took 60 items of a category: with a memory of 100 recent items none of them comes back,
    # though they are the category's most similar items (a profile that keeps only 20 offers the older 40 again)
    rec = build(Settings.of(embedding_dim=DIM, top_k=5, seed=1, exploration_slots=0, recent_items=100), n_per_cat=80)
    store = DictProfileStore()
    taken = [f"coffee-{i}" for i in range(60)]
    result = rec.process([Event("u", "view", float(i), item_id=item) for i, item in enumerate(taken)], store)
    [out] = result.recommendations
    ids = out.items.item_ids
    assert store.get("u").recent == taken
    assert len(ids) == 5 and {cat_of(i) for i in ids} == {"coffee"} and not set(taken) & set(ids)


def test_per_user_order_within_a_batch_and_one_list_per_user() -> None:
    rec = build()
    store = DictProfileStore()
    events = [
        Event("a", "click", 1.0, item_id="shoes-1"),
        Event("b", "click", 1.0, item_id="books-1"),
        Event("a", "click", 2.0, item_id="shoes-2"),
    ]
    result = rec.process(events, store)
    assert [r.user_id for r in result.recommendations] == ["a", "b"]
    assert store.get("a").recent == ["shoes-1", "shoes-2"]
    assert rec.ranker.steps == 0  # no user had been offered anything yet
    # both users take an item from the list they were shown: one ranker step for the whole batch
    picks = [Event(r.user_id, "click", 3.0, item_id=r.items[0].item_id) for r in result.recommendations]
    assert rec.process(picks, store).applied == 2
    assert rec.ranker.steps == 1


def test_learns_only_when_the_taken_item_was_a_candidate() -> None:
    rec = build(Settings.of(embedding_dim=DIM, top_k=5, seed=1, candidates_per_source=6))
    store = DictProfileStore()
    rec.process([Event("u", "click", 1.0, item_id="shoes-1")], store)
    pool = {rec.catalog.item_id(int(r)) for r in rec.offers.pool("u")}
    outside = next(f"{c}-{j}" for c in CATS for j in range(10) if f"{c}-{j}" not in pool | {"shoes-1"})
    rec.process([Event("u", "click", 2.0, item_id=outside)], store)
    assert rec.ranker.steps == 0
    inside = rec.last_offered("u")[0]
    rec.process([Event("u", "click", 3.0, item_id=inside)], store)
    assert rec.ranker.steps == 1


def test_redelivered_batch_is_not_applied_twice() -> None:
    rec = build()
    store = DictProfileStore()
    events = [Event("a", "click", 1.0, item_id="shoes-1"), Event("a", "view", 2.0, item_id="shoes-3")]
    positions = [(0, 10), (0, 11)]
    rec.process(events, store, positions)
    state = store.get("a").to_bytes()
    again = rec.process(events, store, positions)
    assert (again.applied, again.duplicates) == (0, 2)
    assert store.get("a").to_bytes() == state and store.get("a").events == 2


def test_search_blends_query_with_profile() -> None:
    query_vec = np.eye(DIM)[CATS.index("books")].astype(np.float32)
    s = Settings.of(embedding_dim=DIM, top_k=5, seed=1)
    rec = build(s)
    rec.encode_queries = lambda qs: np.stack([query_vec for _ in qs])
    store = DictProfileStore()
    rec.process([Event("u", "click", 1.0, item_id="shoes-1")], store)
    result = rec.process([Event("u", "search", 2.0, query="a good novel")], store)
    [out] = result.recommendations
    assert (out.kind, out.query) == ("search", "a good novel")
    assert cat_of(out.items[0].item_id) == "books"
    assert "matches your search" in out.items[0].reasons


def test_learning_moves_the_ranker_toward_what_users_take() -> None:
    """Users always take the most popular shown item: the popularity weight must grow."""
    s = Settings.of(embedding_dim=DIM, top_k=5, seed=1, learning_rate=0.1, negatives_sampled=8)
    rec = build(s)
    store = DictProfileStore()
    before = rec.ranker.weight("popularity")
    rng = np.random.default_rng(5)
    hot = [f"{c}-0" for c in CATS]
    expected_steps = 0
    for t in range(300):
        user = f"u{rng.integers(20)}"
        item = hot[t % 3]
        pool = rec.offers.pool(user)
        expected_steps += pool is not None and rec.catalog.row_of[item] in pool
        rec.process([Event(user, "click", float(t), item_id=item)], store)
    assert expected_steps >= 30
    assert rec.ranker.steps == expected_steps
    assert rec.ranker.weight("popularity") > before


def test_unknown_items_still_count_for_collaborative_signals() -> None:
    rec = build()
    store = DictProfileStore()
    events = [
        Event("a", "click", 1.0, item_id="ghost-1", context={"category": "ghosts"}),
        Event("a", "click", 2.0, item_id="ghost-2"),
        Event("b", "click", 3.0, item_id="ghost-1"),
    ]
    result = rec.process(events, store)
    b_items = [i.item_id for i in result.recommendations[1].items]
    assert b_items[0] == "ghost-2"  # co-visited with ghost-1 by user a; never embedded
    assert rec.catalog.category_of(rec.catalog.row_of["ghost-1"]) == "ghosts"


def test_learn_disabled_freezes_parameters() -> None:
    rec = build(Settings.of(embedding_dim=DIM, top_k=5, learn=False))
    w = rec.ranker.weights.copy()
    store = DictProfileStore()
    rec.process([Event("u", "click", 1.0, item_id="shoes-1")], store)
    rec.process([Event("u", "purchase", 2.0, item_id=rec.last_offered("u")[0])], store)
    np.testing.assert_array_equal(rec.ranker.weights, w)
    assert rec.ranker.version == "fusion@0"


@pytest.mark.parametrize("k", [1, 3])
def test_k_override(k: int) -> None:
    rec = build()
    store = DictProfileStore()
    rec.process([Event("u", "click", 1.0, item_id="shoes-1")], store)
    assert len(rec.recommend([store.get("u")], k=k)[0]) == k


def test_repeated_queries_are_encoded_once_and_the_cache_is_bounded() -> None:
    s = Settings.of(embedding_dim=DIM, top_k=5, seed=1, query_cache_size=2)
    rec = build(s)
    encoded: list[list[str]] = []

    def encode(queries: list[str]) -> np.ndarray:
        encoded.append(list(queries))
        return np.stack([np.eye(DIM)[len(q) % DIM] for q in queries]).astype(np.float32)

    rec.encode_queries = encode
    store = DictProfileStore()
    rec.process([Event("u", "search", 1.0, query="tea"), Event("v", "search", 1.0, query="tea")], store)
    rec.process([Event("u", "search", 2.0, query="tea"), Event("u", "search", 3.0, query="beans")], store)
    rec.process([Event("u", "search", 4.0, query="mugs"), Event("u", "search", 5.0, query="tea")], store)
    # "tea" once, then cached; "mugs" pushes the least recently used ("beans") out of a 2-entry cache
    assert encoded == [["tea"], ["beans"], ["mugs"]]
    assert list(rec._query_cache) == ["tea", "mugs"]  # least recently used first


def test_training_examples_are_featurised_as_of_their_event_even_when_computed_after_the_batch() -> None:
    """Examples are featurised in one pass after the batch's events; what later events change must not leak in."""
    rec = build()
    store = DictProfileStore()
    first = rec.process([Event("u", "view", 1.0, item_id="books-0"), Event("v", "view", 1.0, item_id="shoes-0")], store)
    shown = first.recommendations[0].items.item_ids
    profile = store.get("u")
    assert profile is not None and first.recommendations[0].user_id == "u"
    taken = Event("u", "click", 2.0, item_id=shown[0])  # offered, so it is a labelled example
    every_row = np.arange(len(rec.catalog), dtype=np.int64)
    expected = rec.features(profile, every_row, taken.ts)  # the whole state just before the event
    examples: list[np.ndarray] = []
    make_example = rec._example
    rec._example = lambda p, rows, e: examples.append(rows) or make_example(p, rows, e)  # type: ignore[method-assign]
    seen: dict[str, np.ndarray] = {}
    rec.ranker.step = lambda pos, neg, n_neg, w: seen.update(pos=pos, neg=neg) or 0.0  # type: ignore[method-assign]
    # the rest of the batch moves the user's profile, popularity, categories and co-visitation on
    rec.learn(
        [
            taken,
            Event("v", "purchase", 3.0, item_id=shown[1]),
            Event("u", "purchase", 4.0, item_id="coffee-3"),
            Event("u", "view", 5.0, item_id=shown[1]),
        ],
        store,
    )
    rows = examples[0]  # the taken event's; u's later events are examples too
    assert rows[0] == rec.catalog.row_of[taken.item_id] and len(rows) > 1
    np.testing.assert_array_equal(seen["pos"][0], expected[rows[0]])
    np.testing.assert_array_equal(seen["neg"][0, : len(rows) - 1], expected[rows[1:]])
    moved = rec.features(store.get("u"), every_row, 5.0)
    covisit = FEATURES.index("covisit")
    assert not np.array_equal(moved[:, covisit], expected[:, covisit])  # co-visitation moved on, after the step


def test_candidate_pools_are_each_users_sorted_union_less_their_exclusions() -> None:
    """The batched union equals the per-user definition: sorted, unique, no -1, nothing excluded, no user mixed up."""
    rng = np.random.default_rng(3)
    n, items = 50, 40  # few items: many duplicates within and across sources, and exclusions that hit
    semantic = rng.integers(-1, items, (n, 12))
    covisited = [rng.integers(0, items, rng.integers(0, 15)) for _ in range(n)]
    popular = rng.choice(items, 6, replace=False)
    excluded = [rng.integers(0, items, rng.integers(0, 5)).tolist() for _ in range(n)]
    pools = candidate_pools(semantic, covisited, popular, excluded)
    assert len(pools) == n
    for i in range(n):
        union = set(semantic[i][semantic[i] >= 0].tolist()) | set(covisited[i].tolist()) | set(popular.tolist())
        assert pools[i].tolist() == sorted(union - set(excluded[i]))
    assert sum(len(p) for p in pools) < n * (12 + 6)  # the duplicates were really there
    assert candidate_pools(np.zeros((0, 12), np.int64), [], popular, []) == []
    nothing = np.zeros(0, np.int64)  # no candidates at all (an empty catalogue), but something to exclude
    empty = candidate_pools(np.zeros((2, 0), np.int64), [nothing, nothing], nothing, [[3], []])
    assert [p.tolist() for p in empty] == [[], []]


def online(rec: Recommender) -> dict[tuple[str, str], list[int]]:
    """Per (kind, discovery label), [scored, hits] so far."""
    counts = rec.online.counts()
    return {key: [n, counts.hits()[key]] for key, n in counts.scored().items() if n}


def test_each_item_event_is_scored_against_the_list_last_published_to_its_user_before_it_is_learned() -> None:
    query_vec = np.eye(DIM)[CATS.index("books")].astype(np.float32)
    rec = build()
    rec.encode_queries = lambda qs: np.stack([query_vec for _ in qs])
    store = DictProfileStore()
    [first] = rec.process([Event("u", "click", 1.0, item_id="coffee-1")], store).recommendations
    assert online(rec) == {}  # nothing was published to u before: nothing to score
    listed = first.items.item_ids
    # one batch: the 1st item of the list, then the 3rd (scored against the same list as published: no new list in
    # between, and taking the 1st does not move the 3rd up), an item outside the list, and a repeat of u's first
    # item (in their profile's recent items)
    batch = [
        Event("u", "view", 2.0, item_id=listed[0]),
        Event("u", "view", 3.0, item_id=listed[2]),
        Event("u", "view", 4.0, item_id="shoes-9" if "shoes-9" not in listed else "shoes-8"),
        Event("u", "view", 5.0, item_id="coffee-1"),
    ]
    [second] = rec.process(batch, store).recommendations
    assert online(rec) == {("behaviour", "discovery"): [3, 2], ("behaviour", "repeat"): [1, 0]}
    assert rec.online.counts().hit_ranks()[("behaviour", "discovery")][:3] == [1, 0, 1]
    # a search list is of kind search; the item taken from it is scored against it
    [found] = rec.process([Event("u", "search", 6.0, query="a novel")], store).recommendations
    assert found.kind == "search" and found.items.item_ids != second.items.item_ids
    rec.process([Event("u", "click", 7.0, item_id=found.items.item_ids[1])], store)
    assert online(rec)[("search", "discovery")] == [1, 1]
    assert rec.online.counts().hit_ranks()[("search", "discovery")][1] == 1
    figures = rec.online.counts().figures()
    assert (figures["scored"], figures["recall"], figures["scored_all"]) == (4, 3 / 4, 5)


def test_a_redelivered_event_is_not_scored_twice() -> None:
    rec = build()
    store = DictProfileStore()
    [out] = rec.process([Event("u", "click", 1.0, item_id="coffee-1")], store, [(0, 1)]).recommendations
    again = [Event("u", "click", 2.0, item_id=out.items[0].item_id)]
    rec.process(again, store, [(0, 2)])
    rec.process(again, store, [(0, 2)])
    assert online(rec) == {("behaviour", "discovery"): [1, 1]}


def test_explaining_a_list_changes_nothing_and_its_terms_add_up_to_the_scores() -> None:
    def run(explain: bool) -> tuple[list[list[str]], list[dict[str, object]]]:
        rec = build()
        store = DictProfileStore()
        published, explained = [], []
        for t in range(40):
            user = f"u{t % 3}"
            item = f"{CATS[t % 3]}-{(t * 7) % 10}"
            for r in rec.process([Event(user, "click", float(t), item_id=item)], store).recommendations:
                published.append(r.items.item_ids)
            if explain:
                explained.append(rec.explain(store.get(user)))
        return published, explained

    plain, _ = run(explain=False)
    published, explained = run(explain=True)
    assert published == plain
    last = explained[-1]
    assert last["user_id"] == "u0" and len(last["items"]) == 5
    assert [i["item_id"] for i in last["items"]] == published[-1]  # nothing changed since it was published
    for item in last["items"]:
        assert set(item["contributions"]) == set(FEATURES)
        assert sum(item["contributions"].values()) == pytest.approx(item["score"], abs=1e-5)
    assert [c["category"] for c in last["top_categories"]] == ["shoes"]  # u0 only ever took shoes
    assert [r["item_id"] for r in last["recent_items"]][:2] == ["shoes-3", "shoes-2"]  # newest first


@pytest.mark.parametrize(("train_window", "shared"), [(0, 3), (6, 6)])
def test_shared_item_updates_carry_the_wider_of_the_co_visitation_and_co_embedding_windows(
    train_window: int, shared: int
) -> None:
    s = Settings.of(embedding_dim=DIM, top_k=5, seed=1, exploration_slots=0, cooc_window=3)
    rec = build(s.replace(coemb_train_window=train_window))
    events = [Event("u", "view", float(i), item_id=f"coffee-{i}") for i in range(8)]
    updates = rec.process(events, DictProfileStore()).item_updates
    assert [u.item_id for u in updates] == [f"coffee-{i}" for i in range(8)]
    # the last event's update names the user's items before it, the newest `shared` of them
    assert list(updates[-1].previous) == [f"coffee-{i}" for i in range(7 - shared, 7)]
