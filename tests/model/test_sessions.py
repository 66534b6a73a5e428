from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.events import Event
from streamrec.model.profiles import DictProfileStore
from streamrec.model.recommender import Recommender
from streamrec.model.sessions import SessionIndex
from streamrec.settings import RetrievalSettings, Settings, SettingsError

TOY = [("a", 1, 0.0), ("a", 2, 1.0), ("a", 3, 2.0), ("b", 2, 10.0), ("b", 4, 11.0), ("d", 1, 20.0), ("d", 5, 21.0)]
"""Three past sessions: a = {1, 2, 3}, b = {2, 4}, d = {1, 5}; the query user then visits 1 and 2."""


def toy_index(**cfg: object) -> SessionIndex:
    idx = SessionIndex(RetrievalSettings(**({"session_capacity": 100, "session_min_support": 1} | cfg)))  # type: ignore[arg-type]
    for user, row, ts in [*TOY, ("u", 1, 30.0), ("u", 2, 31.0)]:
        idx.add(user, None, row, ts)
    return idx


def scores(idx: SessionIndex, user: str = "u") -> dict[int, float]:
    [found] = idx.scores_many([user])
    return dict(zip(found.top(len(found)).tolist(), found.scores[found.order].tolist(), strict=True))


def test_unweighted_neighbours_and_item_scores_by_hand() -> None:
    # sims: a holds 1 and 2 -> 2, b holds 2 -> 1, d holds 1 -> 1; k=2 keeps a and, of the tie, the recent d
    idx = toy_index(session_decay="none", session_neighbours=2, session_sample=10)
    _slots, sims = idx.neighbours("u")
    assert sims.tolist() == [2.0, 1.0]
    # item 1: a + d = 3; items 2, 3: a = 2 (2 first: a's order); 5: d = 1; b's item 4 is not reached
    assert scores(idx) == {1: 3.0, 2: 2.0, 3: 2.0, 5: 1.0}
    assert list(scores(idx)) == [1, 2, 3, 5]


def test_linear_position_weights_favour_the_newest_query_item() -> None:
    # query [1, 2] weighs 1 -> 1/2, 2 -> 2/2: a = 1.5, b = 1, d = 0.5; k=2 keeps a and b
    idx = toy_index(session_decay="linear", session_neighbours=2, session_sample=10)
    assert scores(idx) == {2: 2.5, 1: 1.5, 3: 1.5, 4: 1.0}


def test_sample_keeps_only_the_most_recent_candidate_sessions() -> None:
    idx = toy_index(session_decay="none", session_neighbours=5, session_sample=1)
    assert scores(idx) == {1: 1.0, 5: 1.0}  # only d, the most recent session sharing an item


def test_sessions_split_on_a_gap_or_follow_the_session_id() -> None:
    idx = SessionIndex(RetrievalSettings(session_gap_s=100.0, session_capacity=100))
    idx.add("a", None, 1, 0.0)
    idx.add("a", None, 2, 50.0)  # same session
    idx.add("a", None, 3, 500.0)  # gap: a new one
    assert len(idx) == 2
    idx.add("b", "s1", 1, 0.0)
    idx.add("b", "s1", 2, 10_000.0)  # same id, whatever the gap
    idx.add("b", "s2", 3, 10_001.0)
    assert len(idx) == 4


def test_forget_erases_every_session_of_the_user() -> None:
    idx = toy_index(session_decay="none", session_neighbours=5, session_sample=10)
    idx.add("a", None, 4, 5_000.0)  # a second session of a
    assert len(idx) == 5
    assert idx.forget("a") == 2
    assert len(idx) == 3
    assert scores(idx) == {1: 1.0, 5: 1.0, 2: 1.0, 4: 1.0}  # only b and d are left
    assert idx.forget("a") == 0
    idx.add("x", None, 3, 6_000.0)
    assert scores(idx, "x") == {}  # nothing of a's session {1, 2, 3} is left behind item 3


def test_capacity_and_session_length_are_bounded() -> None:
    idx = toy_index(session_decay="none", session_neighbours=5, session_sample=10, session_capacity=2)
    assert len(idx) == 2  # d and u: a and b made room
    assert scores(idx) == {1: 1.0, 5: 1.0}
    idx = toy_index(session_decay="none", session_neighbours=5, session_sample=10, session_max_items=2)
    # a keeps its newest two items {2, 3}: it no longer holds 1, so its similarity is 1
    assert scores(idx) == {2: 2.0, 3: 1.0, 4: 1.0, 1: 1.0, 5: 1.0}


def test_zero_capacity_turns_sessions_off() -> None:
    assert scores(toy_index(session_capacity=0)) == {}
    on = Settings().retrieval  # on by default, with items held by two neighbours (docs/evaluation.md, "What we tried")
    assert (on.session_capacity, on.session_min_support, on.session_min_overlap) == (200_000, 2, 1)
    with pytest.raises(SettingsError):
        RetrievalSettings(session_capacity=-1)


def test_recommender_offers_session_neighbours_and_forgets_them() -> None:
    dim = 4
    settings = Settings.of(
        embedding_dim=dim, candidates_per_source=2, top_k=3, cooc_window=1, session_capacity=100, session_min_support=1
    )
    rec = Recommender(settings)
    store = DictProfileStore()
    events = [Event("a", "click", float(t), item_id=i) for t, i in enumerate(["p", "q", "r", "s"])]
    events += [Event("b", "click", 100.0, item_id="p")]
    rec.learn(events, store)
    [found] = rec.sessions.scores_many(["b"])
    rows = [rec.catalog.item_id(r) for r in found.top(4).tolist()]
    assert rows == ["p", "q", "r", "s"]
    profile = store.get("b")
    assert profile is not None
    features = rec.features(profile, np.array([rec.catalog.row_of["s"]]), 100.0)
    from streamrec.model.features import F_INDEX

    assert features[0, F_INDEX["session"]] == pytest.approx(1.0 / np.log2(3 + 2))  # s ranks 4th (rank 3)
    assert features[0, F_INDEX["covisit"]] == 0.0  # co-visitation (window 1) does not reach s from p
    rec.forget("a", store)
    assert rec.sessions.scores_many(["b"])[0].rows.tolist() == []


def test_min_overlap_drops_neighbours_sharing_too_few_items() -> None:
    # a shares 1 and 2 with u; b (2) and d (1) share one item each: with a minimum of 2 only a is a neighbour
    idx = toy_index(session_decay="none", session_neighbours=5, session_sample=10, session_min_overlap=2)
    assert scores(idx) == {1: 2.0, 2: 2.0, 3: 2.0}
    assert list(scores(idx)) == [1, 2, 3]
    # a one-item session cannot share two items: x's neighbours need share only its one (a, which holds 3)
    idx.add("x", None, 3, 40.0)
    assert scores(idx, "x") == {1: 1.0, 2: 1.0, 3: 1.0}
    with pytest.raises(SettingsError):
        RetrievalSettings(session_min_overlap=0)


def test_min_support_scores_only_items_that_several_neighbours_hold() -> None:
    # neighbours a (sim 2), b (1), d (1): 1 is held by a and d, 2 by a and b; 3, 4 and 5 by one neighbour each
    idx = toy_index(session_decay="none", session_neighbours=5, session_sample=10, session_min_support=2)
    assert scores(idx) == {1: 3.0, 2: 3.0}
    assert list(scores(idx)) == [1, 2]
    with pytest.raises(SettingsError):
        RetrievalSettings(session_min_support=0)


def test_a_long_session_keeps_its_newest_items_in_visit_order() -> None:
    # a session outgrows the slot table's inline items; a repeat moves to the end, the oldest item leaves
    idx = SessionIndex(RetrievalSettings(session_capacity=100, session_min_support=1, session_max_items=6))
    for t, row in enumerate([1, 2, 3, 4, 5, 6, 2, 7]):
        idx.add("a", None, row, float(t))
    idx.add("q", None, 3, 10.0)
    [found] = idx.scores_many(["q"])
    assert found.rows.tolist() == [3, 4, 5, 6, 2, 7]  # a's items, oldest first: 1 was dropped, 2 moved to the end
    idx.add("r", None, 1, 11.0)
    assert idx.scores_many(["r"])[0].rows.tolist() == []  # a no longer holds 1


def test_an_item_keeps_its_most_recent_holders_and_a_repeat_renews_one() -> None:
    idx = SessionIndex(RetrievalSettings(session_capacity=100, session_min_support=1, session_sample=1))
    for t, (user, row) in enumerate([("a", 10), ("b", 20), ("c", 30), ("a", 1), ("b", 1), ("c", 1), ("a", 1)]):
        idx.add(user, None, row, float(t))  # item 1 keeps 2 holders: b drops out, a's repeat makes it newest
    idx.add("q", None, 1, 10.0)  # q is now the newest holder: c drops out, a is left
    assert sorted(idx.scores_many(["q"])[0].rows.tolist()) == [1, 10]
    # a repeat within a session holds the item once: a's similarity to q stays 1
    idx = SessionIndex(RetrievalSettings(session_capacity=100, session_min_support=1, session_decay="none"))
    for t, (user, row) in enumerate([("a", 1), ("b", 1), ("a", 10), ("a", 1), ("b", 20)]):
        idx.add(user, None, row, float(t))
    idx.add("q", None, 1, 10.0)
    assert scores(idx, "q") == {1: 2.0, 10: 1.0, 20: 1.0}


def test_the_oldest_kept_session_makes_room_after_forgotten_ones() -> None:
    idx = SessionIndex(RetrievalSettings(session_capacity=2, session_min_support=1))
    for t, user in enumerate(["a", "b"]):
        idx.add(user, None, 1, float(t))
        assert idx.forget(user) == 1
    for t, (user, row) in enumerate([("c", 3), ("d", 4), ("e", 3)], start=2):
        idx.add(user, None, row, float(t))
    assert len(idx) == 2  # e made room by dropping c, the oldest session kept (not a or b, long gone)
    idx.add("q", None, 4, 9.0)  # q's session pushes out d: nothing holds 4 but q
    assert idx.scores_many(["q"])[0].rows.tolist() == []
    assert idx.scores_many(["e"])[0].rows.tolist() == []


def test_a_one_item_session_costs_little_memory() -> None:
    import tracemalloc

    idx = SessionIndex(RetrievalSettings(session_capacity=100_000))
    users = [f"user-{i}" for i in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, user in enumerate(users):
            idx.add(user, None, i % 1_000, float(i))
        per_session = (tracemalloc.get_traced_memory()[0] - before) / len(users)
    finally:
        tracemalloc.stop()
    assert per_session < 300  # slot arrays and the user's dict entry, no object per session
