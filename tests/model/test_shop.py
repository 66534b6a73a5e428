"""A shop's catalogue in the recommender: withdrawn items, business rules and per-user hides."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.events import Event, InvalidMessage, Item, ItemEmbedding
from streamrec.model.profiles import DictProfileStore
from streamrec.model.recommender import Recommender
from streamrec.model.rules import RuleSet, parse_rule, rule_from_dict
from streamrec.settings import Settings

DIM = 8
CATS = ("shoes", "coffee", "books")


def build(**flat: object) -> Recommender:
    """Ten items per category, embeddings clustered by category, brands ``b0``..``b4``; lists by relevance alone."""
    s = Settings.of(**({"embedding_dim": DIM, "top_k": 5, "seed": 1, "exploration_slots": 0} | flat))
    rec = Recommender(s)
    rng = np.random.default_rng(0)
    for i, c in enumerate(CATS):
        for j in range(10):
            v = np.eye(DIM)[i] + 0.2 * rng.normal(size=DIM)
            item = Item(f"{c}-{j}", f"{c} {j}", ts=1.0, category=c, brand=f"b{j % 5}", price=10.0 + j)
            rec.upsert_item(ItemEmbedding(item, v.astype(np.float32), "m", "text"))
    return rec


def lists_of(rec: Recommender, events: list[Event], store: DictProfileStore) -> dict[str, list[str]]:
    return {r.user_id: r.items.item_ids for r in rec.process(events, store).recommendations}


def test_a_withdrawn_item_is_offered_by_no_source_and_comes_back_when_relisted() -> None:
    rec = build(top_k=8)
    store = DictProfileStore()
    # coffee-9 is popular, co-visited with coffee-0 and close to coffee lovers' taste: every source offers it
    warm = [Event(f"p{n}", "purchase", float(n), item_id="coffee-9") for n in range(20)]
    warm += [Event("v", "view", 30.0, item_id="coffee-0"), Event("v", "view", 31.0, item_id="coffee-9")]
    rec.process(warm, store)
    [before] = lists_of(rec, [Event("u", "click", 40.0, item_id="coffee-0")], store).values()
    assert "coffee-9" in before
    row = rec.catalog.row_of["coffee-9"]
    listing = rec.users_listing(["coffee-9"])
    assert listing == ["u"]  # the buyers and the viewer are not offered it again: only u's list holds it
    assert rec.withdraw("coffee-9", ts=41.0)
    seeds = [rec.catalog.row_of["coffee-0"]]
    assert row in rec.covis.score_arrays(seeds, 42.0).rows  # the statistics keep it ...
    assert row not in rec.catalog.top_popular(10)  # ... no source offers it
    fresh = rec.refresh(listing, store)
    assert [r.user_id for r in fresh] == listing and all("coffee-9" not in r.items.item_ids for r in fresh)
    after = lists_of(rec, [Event(f"p{n}", "view", 50.0, item_id="coffee-1") for n in range(20)], store)
    assert all("coffee-9" not in ids for ids in after.values())
    assert rec.users_listing(["coffee-9"]) == []
    rec.upsert_item(ItemEmbedding(Item("coffee-9", "coffee 9", 60.0, category="coffee"), np.eye(DIM)[1], "m", "t"))
    [back] = lists_of(rec, [Event("u", "click", 61.0, item_id="coffee-1")], store).values()
    assert "coffee-9" in back


def test_hidden_items_and_categories_stay_out_of_that_users_lists_until_forgotten() -> None:
    rec = build()
    store = DictProfileStore()
    [first] = lists_of(rec, [Event("u", "click", 1.0, item_id="coffee-0")], store).values()
    hidden = first[0]
    [after_item] = lists_of(rec, [Event("u", "hide", 2.0, item_id=hidden)], store).values()
    assert hidden not in after_item and len(after_item) == 5
    [after_cat] = lists_of(rec, [Event("u", "hide", 3.0, context={"category": "coffee"})], store).values()
    assert not [i for i in after_cat if i.startswith("coffee")]
    [later] = lists_of(rec, [Event("u", "click", 4.0, item_id="coffee-3")], store).values()
    assert not [i for i in later if i.startswith("coffee")]  # a click later does not undo the hide
    [search] = rec.recommend([store.get("u")], 5.0, [np.eye(DIM)[1].astype(np.float32)])
    assert not [i for i in search.item_ids if i.startswith("coffee")]  # nor does a search
    [other] = lists_of(rec, [Event("w", "click", 4.0, item_id="coffee-3")], store).values()
    assert [i for i in other if i.startswith("coffee")]  # hides are per user
    result = rec.process([Event("u", "forget_user", 6.0), Event("u", "click", 7.0, item_id="coffee-3")], store)
    assert [i for i in result.recommendations[0].items.item_ids if i.startswith("coffee")]
    assert store.get("u").hidden_categories == []


def test_global_exclusions_by_item_category_and_brand() -> None:
    rec = build(top_k=10)
    store = DictProfileStore()
    events = [Event("u", "click", 1.0, item_id="coffee-0"), Event("w", "click", 1.0, item_id="shoes-0")]
    lists_of(rec, events, store)
    rec.set_rules(
        RuleSet.of(
            [
                rule_from_dict("no-b1", {"exclude": {"brands": ["b1"]}}),
                rule_from_dict("no-books", {"exclude": {"categories": ["books"], "item_ids": ["coffee-2"]}}),
            ]
        )
    )
    out = lists_of(
        rec, [Event("u", "view", 2.0, item_id="coffee-4"), Event("w", "view", 2.0, item_id="shoes-4")], store
    )
    for ids in out.values():
        assert len(ids) == 10
        assert not [i for i in ids if i.startswith("books") or i.endswith(("-1", "-6")) or i == "coffee-2"]
    rec.set_rules(RuleSet())
    out = lists_of(rec, [Event("u", "view", 3.0, item_id="coffee-5")], store)
    assert "coffee-2" in out["u"] or "coffee-1" in out["u"]


def test_a_boost_moves_a_category_up_and_a_demotion_moves_it_down() -> None:
    rec = build(top_k=10)
    store = DictProfileStore()
    lists_of(rec, [Event("u", "click", 1.0, item_id="coffee-0")], store)
    profile = store.get("u")

    def shoes_rank() -> int:
        ids = rec.recommend([profile], 2.0, k=29)[0].item_ids
        return min(ids.index(i) for i in ids if i.startswith("shoes"))

    plain = shoes_rank()
    rec.set_rules(RuleSet.of([parse_rule(b"push", b'{"boost": {"categories": {"shoes": 50}}}')]))
    assert shoes_rank() < plain
    rec.set_rules(RuleSet.of([parse_rule(b"hold", b'{"boost": {"categories": {"shoes": 0.02}}}')]))
    assert shoes_rank() > plain


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        (b"r", b"{}", "at least one of 'exclude', 'boost', 'cap'"),
        (b"r", b'{"exclude": {"brand": ["x"]}}', "unknown field(s) in 'exclude': brand"),
        (b"r", b'{"boost": {"categories": {"shoes": 0}}}', "must be a multiplier in (0, 1e+06]"),
        (b"r", b'{"cap": {"per_category": 0}}', "'cap.per_category' must be an integer >= 1"),
        (b"r", b'{"exclude": {"categories": "shoes"}}', "must be a list of strings"),
        (b"r", b"[1]", "expected a JSON object"),
        (b"", b'{"cap": {"per_brand": 2}}', "a rule's key is its name"),
    ],
)
def test_invalid_rules_say_why(key: bytes, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_rule(key, raw)
    assert reason in str(info.value)


def test_rules_combine_and_round_trip() -> None:
    a = rule_from_dict("a", {"boost": {"brands": {"x": 2.0}}, "cap": {"per_category": 4, "per_brand": 3}})
    b = rule_from_dict("b", {"boost": {"brands": {"x": 1.5, "y": 0.5}}, "cap": {"per_category": 2}, "ts": 9})
    rules = RuleSet.of([a, b])
    assert rules.boost_brands == {"x": 3.0, "y": 0.5}
    assert (rules.max_per_category, rules.max_per_brand) == (2, 3)
    assert rule_from_dict("b", b.to_dict()) == b
    assert RuleSet.from_values({"a": a.to_dict(), "b": b.to_dict()}) == rules


def test_an_empty_list_replaces_the_last_one_so_a_withdrawal_refreshes_no_one_for_nothing() -> None:
    rec = build()
    store = DictProfileStore()
    [first] = lists_of(rec, [Event("u", "click", 1.0, item_id="coffee-0")], store).values()
    assert rec.users_listing([first[0]]) == ["u"]
    rec.set_rules(RuleSet.of([rule_from_dict("all-out", {"exclude": {"categories": list(CATS)}})]))
    [empty] = lists_of(rec, [Event("u", "click", 2.0, item_id="coffee-1")], store).values()
    assert empty == []
    assert rec.users_listing([first[0]]) == []  # u's last list is the empty one: nothing to refresh
