"""What a list may hold: no near-duplicates, caps per category and brand, MMR, exploration slots."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.events import Event, Item, ItemEmbedding
from streamrec.model.profiles import DictProfileStore, UserProfile
from streamrec.model.recommender import EXPLORING, Recommender
from streamrec.model.rules import RuleSet, rule_from_dict
from streamrec.model.selection import Constraints, select_lists
from streamrec.settings import Settings

DIM = 8


def shop(settings: Settings, items: list[tuple[str, str, str, str, np.ndarray]]) -> Recommender:
    """A recommender over ``(id, title, category, brand, vector)`` items."""
    rec = Recommender(settings)
    for item_id, title, category, brand, v in items:
        item = Item(item_id, title, 1.0, category=category, brand=brand)
        rec.upsert_item(ItemEmbedding(item, (v / np.linalg.norm(v)).astype(np.float32), "m", "text"))
    return rec


def direction(i: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    v = np.eye(DIM)[i % DIM] + 0.3 * np.eye(DIM)[0]
    return v + noise * np.random.default_rng(seed).normal(size=DIM)


def user_looking_at(rec: Recommender, vector: np.ndarray, user: str = "u") -> UserProfile:
    profile = UserProfile.new(user, DIM)
    profile.long_term[:] = vector
    return profile


def listed(rec: Recommender, profile: UserProfile, **kw: object) -> list[str]:
    return rec.recommend([profile], now=1.0, **kw)[0].item_ids  # type: ignore[arg-type]


def base(**flat: object) -> Settings:
    return Settings.of(**({"embedding_dim": DIM, "top_k": 4, "seed": 3, "exploration_slots": 0} | flat))


def test_near_duplicates_by_title_or_embedding_keep_only_the_better_one() -> None:
    items = [
        ("headset-1", "Beatline Bluetooth Headset", "audio", "beatline", direction(1)),
        ("headset-2", "beatline bluetooth-headset", "audio", "beatline", direction(2)),  # same normalised title
        ("twin-a", "Twin A", "audio", "x", direction(1, 0.001, 1)),  # cosine ≈ 1 with headset-1
        ("other-1", "Other 1", "audio", "y", direction(1, 0.3, 2)),
        ("other-2", "Other 2", "audio", "y", direction(2, 0.3, 3)),
        ("other-3", "Other 3", "audio", "y", direction(3, 0.3, 4)),
    ]
    q = direction(1) + direction(2)
    off = shop(base(near_duplicate_cosine=1.01), items)
    assert set(listed(off, user_looking_at(off, q))) >= {"headset-1", "twin-a"}  # the filter off: both
    on = shop(base(), items)
    ids = listed(on, user_looking_at(on, q))
    assert len(ids) == 4
    # the two titles are one product, and twin-a is the first one's twin: one of the three represents them
    assert len({"headset-1", "headset-2", "twin-a"} & set(ids)) == 1
    assert "other-1" in ids and "other-2" in ids  # the next best fill the freed places
    # the same title alone (vectors far apart) is enough
    titles = shop(base(top_k=3), [items[0], items[1], items[3], items[4], items[5]])
    ids = listed(titles, user_looking_at(titles, q))
    assert len(ids) == 3 and len({"headset-1", "headset-2"} & set(ids)) == 1


def test_title_less_items_with_equal_embeddings_are_not_near_duplicates() -> None:
    """Without titles, items' text comes from their attributes: one vector means the same attributes, not the same
    product, so the embedding check leaves them alone (a shop export of titleless items kept every one)."""
    same = direction(1)
    items = [(f"sku-{n}", "", "audio", "beatline", same.copy()) for n in range(3)]
    items += [("other-1", "Other 1", "audio", "y", direction(2, 0.3, 2))]
    for settings in (base(), base(mmr_lambda=0.5)):  # the quick path and the greedy one
        rec = shop(settings, items)
        assert sorted(listed(rec, user_looking_at(rec, same))) == ["other-1", "sku-0", "sku-1", "sku-2"]
    titled = shop(base(), [(i, f"Title {i}", c, b, v) for i, _, c, b, v in items])
    assert len({"sku-0", "sku-1", "sku-2"} & set(listed(titled, user_looking_at(titled, same)))) == 1


def test_a_category_cap_and_a_brand_cap_hold_in_every_list() -> None:
    items = [(f"i{n}", f"item {n}", f"c{n % 2}", f"b{n % 3}", direction(n, 0.4, n)) for n in range(18)]
    rec = shop(base(top_k=6), items)
    profile = user_looking_at(rec, direction(0))
    free = listed(rec, profile)
    assert max(sum(1 for i in free if int(i[1:]) % 2 == c) for c in (0, 1)) > 2  # uncapped, a category dominates
    rec.set_rules(RuleSet.of([rule_from_dict("cap", {"cap": {"per_category": 2}})]))
    capped = listed(rec, profile)
    assert len(capped) == 4  # two categories, two each: the list is shorter rather than break the cap
    assert sorted(int(i[1:]) % 2 for i in capped) == [0, 0, 1, 1]
    rec.set_rules(RuleSet.of([rule_from_dict("cap", {"cap": {"per_brand": 1}})]))
    by_brand = listed(rec, profile)
    assert sorted(int(i[1:]) % 3 for i in by_brand) == [0, 1, 2]


def test_exploration_fills_exactly_its_slots_with_uncertain_items_and_says_so() -> None:
    items = [(f"i{n}", f"item {n}", "c", "b", direction(n, 0.5, n)) for n in range(40)]
    s = Settings.of(embedding_dim=DIM, top_k=10, seed=3, exploration_slots=3, rerank_depth=30)
    rec = shop(s, items)
    store = DictProfileStore()
    for n in range(12):
        rec.process([Event(f"u{n}", "click", 1.0 + n, item_id=f"i{n}")], store)
    for n in range(12):
        [out] = rec.process([Event(f"u{n}", "view", 100.0 + n, item_id=f"i{n + 1}")], store).recommendations
        reasons = [r for _, _, r in ((i.item_id, i.score, i.reasons) for i in out.items)]
        assert len(out.items) == 10
        assert [r == (EXPLORING,) for r in reasons] == [False] * 7 + [True] * 3  # the last three slots, exactly
    # exploration draws from the uncertain (rarely listed) items only: with none uncertain, no slot explores
    rec.settings = s.replace(exploration_max_exposures=0)
    [out] = rec.process([Event("u0", "view", 200.0, item_id="i5")], store).recommendations
    assert EXPLORING not in {r for i in out.items for r in i.reasons}
    # a search answers its query: no exploration
    rec.settings = s
    search = rec.recommend([store.get("u1")], 300.0, [np.ones(DIM, np.float32) / np.sqrt(DIM)], remember=True)[0]
    assert EXPLORING not in {r for i in search for r in i.reasons}


def test_exploration_learns_exposures_and_uptakes() -> None:
    items = [(f"i{n}", f"item {n}", "c", "b", direction(n, 0.5, n)) for n in range(30)]
    rec = shop(Settings.of(embedding_dim=DIM, top_k=5, seed=3, exploration_slots=1), items)
    store = DictProfileStore()
    [out] = rec.process([Event("u", "click", 1.0, item_id="i0")], store).recommendations
    explored = out.items.item_ids[-1]
    row = rec.catalog.row_of[explored]
    assert out.items.reasons[-1] == (EXPLORING,) and rec.catalog.exposures[row] == 1
    assert int(rec.catalog.exposures.sum()) == 5
    steps = rec.ranker.steps
    rec.process([Event("u", "click", 2.0, item_id=explored)], store)  # taken from the list: an uptake ...
    assert rec.catalog.uptakes[row] == 1
    assert rec.ranker.steps == steps + 1  # ... and a training example, as it was in the candidate pool


def test_the_quick_path_and_the_greedy_one_choose_the_same_lists() -> None:
    """Users whose proposal breaks nothing skip the greedy selection: forcing it on everyone changes no list."""
    rng = np.random.default_rng(11)
    items = [(f"i{n}", f"item {n % 25}", f"c{n % 4}", "b", rng.normal(size=DIM)) for n in range(60)]
    rec = shop(Settings.of(embedding_dim=DIM, top_k=8, seed=3, exploration_slots=2, near_duplicate_cosine=0.9), items)
    pools = [rng.choice(60, size=int(rng.integers(3, 40)), replace=False) for _ in range(50)]
    scores = rng.normal(size=sum(map(len, pools)))
    cfg = rec.settings.lists
    quick = select_lists(rec.catalog, pools, scores, 8, cfg, Constraints(0.9), [True] * 50, np.random.default_rng(1))
    # an MMR weight of exactly 1 is relevance alone, but goes through the greedy path for every user
    slow = select_lists(
        rec.catalog,
        pools,
        scores,
        8,
        cfg,
        Constraints(0.9, mmr_lambda=1.0 - 1e-12),
        [True] * 50,
        np.random.default_rng(1),
    )
    assert [p.tolist() for p in quick.picked] == [p.tolist() for p in slow.picked]
    assert quick.explored == slow.explored and quick.explore_at == slow.explore_at
    assert sum(quick.explored) > 0


def test_mmr_trades_relevance_for_spread() -> None:
    items = [(f"near{n}", f"near {n}", "c", "b", direction(1, 0.05, n)) for n in range(5)]
    items += [(f"far{n}", f"far {n}", "c", "b", direction(n + 2, 0.05, 10 + n)) for n in range(5)]
    q = direction(1) * 3 + sum(direction(n + 2) for n in range(5))
    relevance = shop(base(top_k=5, near_duplicate_cosine=1.01), items)  # the near ones are close, not duplicates
    assert sum(i.startswith("near") for i in listed(relevance, user_looking_at(relevance, q))) == 5
    mmr = shop(base(top_k=5, mmr_lambda=0.3, near_duplicate_cosine=1.01), items)
    ids = listed(mmr, user_looking_at(mmr, q))
    assert ids[0].startswith("near") and sum(i.startswith("far") for i in ids) >= 3


@pytest.mark.parametrize("slots", [0, 1, 2])
def test_lists_are_full_and_unique_whatever_the_slots(slots: int) -> None:
    items = [(f"i{n}", f"item {n}", f"c{n % 3}", "b", direction(n, 0.5, n)) for n in range(30)]
    rec = shop(Settings.of(embedding_dim=DIM, top_k=6, seed=3, exploration_slots=slots), items)
    store = DictProfileStore()
    out = rec.process([Event(f"u{n}", "click", 1.0, item_id=f"i{n}") for n in range(10)], store).recommendations
    assert all(len(r.items) == 6 and len(set(r.items.item_ids)) == 6 for r in out)
    assert all(sum(x == (EXPLORING,) for x in r.items.reasons) == slots for r in out)
