"""Baselines: each does the one thing it claims, with the same list rules as streamrec."""

from __future__ import annotations

import numpy as np

from streamrec.lab.baselines import CooccurrenceBaseline, OnlineMFBaseline, PopularityBaseline, TextOnlyBaseline
from streamrec.model.events import Event, Item, ItemEmbedding
from streamrec.settings import Settings

DAY = 24 * 3600.0


def settings() -> Settings:
    return Settings.of(embedding_dim=4, popularity_half_life_s=DAY)


def embedding(item_id: str, vector: list[float]) -> ItemEmbedding:
    v = np.asarray(vector, np.float32)
    return ItemEmbedding(Item(item_id, item_id, 0.0), v / np.linalg.norm(v), "m", "text")


def test_popularity_decays_and_excludes_the_users_own_items() -> None:
    pop = PopularityBaseline(settings())
    for n in range(4):  # "old" was popular a week ago ...
        pop.learn(Event(f"u{n}", "purchase", 0.0, item_id="old"))
    for n in range(2):  # ... "new" is popular today, with fewer events
        pop.learn(Event(f"v{n}", "click", 7 * DAY, item_id="new"))
    pop.learn(Event("me", "view", 7 * DAY, item_id="third"))
    # 4·3 purchases decayed by 2^-7 < 2 clicks now; "third" (one view) sits between them
    assert pop.recommend("stranger", 7 * DAY, 3) == ["new", "third", "old"]
    # a user is never offered what they just interacted with
    assert pop.recommend("me", 7 * DAY, 3) == ["new", "old"]


def test_cooccurrence_follows_the_users_last_items_then_tops_up_with_popularity() -> None:
    cooc = CooccurrenceBaseline(settings())
    for n in range(3):  # others go tent → stove; one goes tent → lamp
        cooc.learn(Event(f"u{n}", "view", 1.0 + n, item_id="tent"))
        cooc.learn(Event(f"u{n}", "view", 1.5 + n, item_id="stove"))
    cooc.learn(Event("w", "view", 5.0, item_id="tent"))
    cooc.learn(Event("w", "view", 5.5, item_id="lamp"))
    for n in range(6):
        cooc.learn(Event(f"p{n}", "view", 6.0, item_id="hit"))
    cooc.learn(Event("me", "view", 7.0, item_id="tent"))
    ranked = cooc.recommend("me", 7.0, 3)
    # co-visited items first (stronger first), then the most popular item, never "tent" itself
    assert ranked == ["stove", "lamp", "hit"]


def test_text_only_ranks_by_cosine_to_the_behaviour_embedding() -> None:
    text = TextOnlyBaseline(settings())
    for item_id, vec in [("a", [1, 0, 0, 0]), ("a2", [0.9, 0.1, 0, 0]), ("b", [0, 1, 0, 0]), ("c", [0, 0, 1, 0])]:
        text.upsert_item(embedding(item_id, vec))
    text.learn(Event("me", "purchase", 1.0, item_id="a"))
    assert text.recommend("me", 1.0, 2)[0] == "a2"  # nearest to the taken item, which itself is excluded
    assert "a" not in text.recommend("me", 1.0, 3)


def test_online_mf_learns_a_users_taste_over_popularity() -> None:
    mf = OnlineMFBaseline(settings())
    items = [f"i{n}" for n in range(30)]
    for item in items:
        mf.upsert_item(embedding(item, [1, 0, 0, 0]))
    rng = np.random.default_rng(0)
    t = 0.0
    # everyone takes i0..i9 (popular); "me" repeatedly takes from i20..i29 only
    for _ in range(60):
        t += 1.0
        mf.learn(Event(f"u{int(rng.integers(20))}", "click", t, item_id=items[int(rng.integers(10))]))
        mf.learn(Event("me", "click", t, item_id=items[20 + int(rng.integers(10))]))
    scores = {i: mf.model.predict_one("me", i) for i in items}
    assert np.mean([scores[i] for i in items[20:]]) > np.mean([scores[i] for i in items[10:20]])


def test_popularity_counts_items_it_was_never_told_about_past_its_first_capacity() -> None:
    """Events may name items no upsert announced (a jsonl log without item records): rows grow as they come."""
    pop = PopularityBaseline(settings())
    for n in range(3000):
        pop.learn(Event("u", "view", float(n), item_id=f"i{n}"))
    assert len(pop.ids) == 3000
    assert pop.recommend("stranger", 3000.0, 2) == ["i2999", "i2998"]


def test_popularity_baseline_decays_with_popularity_half_life_not_the_models() -> None:
    s = Settings.of(popularity_half_life_s=10.0, model_half_life_s=99.0)
    assert PopularityBaseline(s).clock.half_life_s == 10.0


def test_baselines_leave_out_the_same_seen_items_as_the_workers_profile() -> None:
    # the window is the profile's recent_items: with 2, the oldest of three viewed items may be offered again
    pop = PopularityBaseline(Settings.of(embedding_dim=4, recent_items=2))
    for t, item in enumerate(["a", "b", "c", "a", "b", "c", "d"]):
        pop.learn(Event(f"other{t}", "view", float(t), item_id=item))
    for t, item in enumerate(["a", "b", "c"]):
        pop.learn(Event("me", "view", 10.0 + t, item_id=item))
    assert pop.recommend("me", 20.0, 4) == ["a", "d"]  # popularity: a, b, c (3 views each), then d
    pop = PopularityBaseline(Settings.of(embedding_dim=4, recent_items=3))
    for t, item in enumerate(["a", "b", "c", "d", "a", "b", "c", "a", "b", "c"]):
        pop.learn(Event("me" if t >= 7 else f"other{t}", "view", float(t), item_id=item))
    assert pop.recommend("me", 20.0, 4) == ["d"]
