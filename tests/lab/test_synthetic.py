from __future__ import annotations

from collections import Counter

from streamrec.lab.synthetic import FAVOURITE_SHARE, make_events, make_shop


def test_events_are_reproducible_skewed_and_reference_the_catalogue() -> None:
    shop = make_shop(n_items=800, n_users=200, seed=5)
    events = make_events(shop, 20_000, seed=5, start_ts=100.0)
    assert events == make_events(shop, 20_000, seed=5, start_ts=100.0)
    assert len(events) == 20_000
    assert [e.ts for e in events[:3]] == [100.0, 101.0, 102.0]
    category = {i.item_id: i.category for i in shop.items}
    item_events = [e for e in events if e.type != "search"]
    assert all(e.item_id in category for e in item_events)
    assert all(e.query for e in events if e.type == "search")
    users = Counter(e.user_id for e in events).most_common()
    assert users[0][0] == "user-0" and users[0][1] > 10 * users[-1][1]  # hot users, long tail
    items = Counter(e.item_id for e in item_events)
    # bounded Zipf inside each category: a hot head, most of the catalogue touched, no pile-up on the last item
    assert len(items) > 0.9 * len(shop.items)
    assert items.most_common(1)[0][1] > 20 * sorted(items.values())[len(items) // 2]
    in_favourite = sum(category[e.item_id] in shop.favourites[e.user_id] for e in item_events) / len(item_events)
    assert FAVOURITE_SHARE - 0.03 < in_favourite < 1.0
