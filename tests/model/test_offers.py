from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.offers import OfferCache


def rows(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def test_the_least_recently_offered_user_makes_room_and_the_others_keep_their_offers() -> None:
    offers = OfferCache(users=3, pool_width=4, list_width=2)
    for user, base in (("a", 10), ("b", 20), ("c", 30)):
        offers.remember(user, rows(base, base + 1, base + 2), rows(base + 2, base))
    offers.remember("a", rows(11, 12), rows(12))  # a new list for a: a is now the most recent
    offers.remember("d", rows(40, 41, 42, 43), rows(43, 40))
    assert "b" not in offers and offers.pool("b") is None and offers.shown("b").tolist() == []
    assert len(offers) == 3
    assert offers.pool("a").tolist() == [11, 12] and offers.shown("a").tolist() == [12]
    assert offers.pool("c").tolist() == [30, 31, 32] and offers.shown("c").tolist() == [32, 30]
    assert offers.pool("d").tolist() == [40, 41, 42, 43] and offers.shown("d").tolist() == [43, 40]
    offers.remember("e", rows(50), rows(50))  # c is the oldest now
    assert sorted(u for u in "abcde" if u in offers) == ["a", "d", "e"]


def test_reading_an_offer_does_not_make_it_recent() -> None:
    offers = OfferCache(users=2, pool_width=2, list_width=1)
    offers.remember("a", rows(1), rows(1))
    offers.remember("b", rows(2), rows(2))
    assert offers.pool("a") is not None and offers.shown("a").tolist() == [1]
    offers.remember("c", rows(3), rows(3))
    assert "a" not in offers and "b" in offers and "c" in offers


def test_a_taken_row_leaves_the_list_but_not_the_pool() -> None:
    offers = OfferCache(users=2, pool_width=5, list_width=4)
    offers.remember("a", rows(5, 6, 7, 8), rows(8, 6, 5))
    offers.taken("a", 6)
    assert offers.shown("a").tolist() == [8, 5]
    assert offers.pool("a").tolist() == [5, 6, 7, 8]
    offers.taken("a", 99)  # never listed
    offers.taken("nobody", 5)  # no offer kept
    assert offers.shown("a").tolist() == [8, 5]
    offers.remember("a", rows(1, 2), rows(2, 1))  # a new offer starts a fresh list
    assert offers.shown("a").tolist() == [2, 1]


def test_forgetting_frees_the_slot_without_evicting_anyone() -> None:
    offers = OfferCache(users=2, pool_width=2, list_width=1)
    offers.remember("a", rows(1), rows(1))
    offers.remember("b", rows(2), rows(2))
    offers.forget("a")
    offers.forget("a")  # twice: nothing left to drop
    assert len(offers) == 1 and "a" not in offers
    offers.remember("c", rows(3, 4), rows(4))
    assert "b" in offers and offers.pool("c").tolist() == [3, 4] and offers.pool("b").tolist() == [2]


def test_memory_is_fixed_by_the_capacity_whatever_the_number_of_users() -> None:
    offers = OfferCache(users=4, pool_width=3, list_width=2)
    reserved = offers.nbytes
    # pools, shown and published lists (int32), three lengths (int32), one kind code (int8) per user
    assert reserved == 4 * 3 * 4 + 2 * 4 * 2 * 4 + 3 * 4 * 4 + 4
    for u in range(100):
        offers.remember(f"u{u}", rows(u, u + 1, u + 2), rows(u + 2))
    assert offers.nbytes == reserved and len(offers) == 4
    assert [offers.pool(f"u{u}").tolist() for u in range(96, 100)] == [[u, u + 1, u + 2] for u in range(96, 100)]


def test_a_pool_wider_than_reserved_is_kept_whole() -> None:
    offers = OfferCache(users=2, pool_width=2, list_width=1)
    offers.remember("a", rows(1, 2), rows(2))
    offers.remember("b", rows(3, 4, 5, 6), rows(6, 3, 4))
    assert offers.pool("b").tolist() == [3, 4, 5, 6] and offers.shown("b").tolist() == [6, 3, 4]
    assert offers.pool("a").tolist() == [1, 2] and offers.shown("a").tolist() == [2]


def test_views_are_read_only() -> None:
    offers = OfferCache(users=1, pool_width=2, list_width=1)
    offers.remember("a", rows(1, 2), rows(2))
    with pytest.raises(ValueError):
        offers.pool("a")[0] = 7
    with pytest.raises(ValueError):
        offers.shown("a")[0] = 7
    with pytest.raises(ValueError):
        offers.shown("nobody")[:] = 7  # the shared empty list too


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="room for a user"):
        OfferCache(users=0, pool_width=10, list_width=10)


def test_the_published_list_keeps_its_ranks_when_items_are_taken() -> None:
    offers = OfferCache(users=2, pool_width=5, list_width=3)
    offers.remember("a", rows(5, 6, 7, 8), rows(8, 6, 5), kind=1)
    offers.taken("a", 8)
    assert offers.shown("a").tolist() == [6, 5] and offers.published("a").tolist() == [8, 6, 5]
    which, ranks, kinds = offers.published_ranks(["a", "a", "nobody", "a"], [8, 5, 8, 7])
    assert (which.tolist(), ranks.tolist(), kinds.tolist()) == ([0, 1, 3], [1, 3, 0], [1, 1, 1])
    offers.remember("a", rows(1, 2), rows(2))  # a new, shorter list: the old one's tail is not in it
    assert offers.published_ranks(["a", "a"], [2, 5])[1].tolist() == [1, 0]
    assert offers.published_ranks(["a"], [2])[2].tolist() == [0]  # the default kind
    offers.forget("a")
    assert offers.published("a").tolist() == [] and len(offers.published_ranks(["a"], [2])[0]) == 0


def test_published_ranks_of_no_pairs() -> None:
    offers = OfferCache(users=1, pool_width=1, list_width=1)
    assert [x.tolist() for x in offers.published_ranks([], [])] == [[], [], []]
