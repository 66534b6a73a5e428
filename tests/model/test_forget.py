"""forget_user in the core: the profile and per-user memory go, nothing about the user is published after it."""

from __future__ import annotations

import numpy as np

from streamrec.lab.evaluation import _replay
from streamrec.model.events import Event
from streamrec.model.numeric import GROWTH_LOG2_BOUND, DecayClock
from streamrec.model.profiles import DictProfileStore
from streamrec.model.recommender import Recommender
from tests.model.test_recommender import build


def forget(user: str, ts: float = 9.0) -> Event:
    return Event(user, "forget_user", ts)


def test_forget_deletes_profile_and_candidate_pool() -> None:
    rec = build()
    store = DictProfileStore()
    rec.process([Event("u", "click", 1.0, item_id="coffee-1"), Event("v", "click", 1.0, item_id="shoes-1")], store)
    assert store.get("u") is not None and "u" in rec.offers
    result = rec.process([forget("u")], store)
    assert result.forgotten == ["u"] and result.applied == 0 and result.recommendations == []
    assert store.get("u") is None and "u" not in rec.offers
    assert store.get("v") is not None and "v" in rec.offers  # nobody else is touched


def test_forget_in_the_middle_of_a_batch_keeps_stream_order() -> None:
    rec = build()
    store = DictProfileStore()
    events = [
        Event("u", "purchase", 1.0, item_id="coffee-1"),
        Event("v", "click", 1.0, item_id="shoes-2"),
        forget("u", 2.0),
        Event("u", "view", 3.0, item_id="books-3"),
    ]
    result = rec.process(events, store, [(0, n) for n in range(len(events))])
    assert result.forgotten == ["u"] and result.applied == 3
    # the list computed for u before the forget is dropped; the one after it comes from a fresh profile
    assert [r.user_id for r in result.recommendations] == ["v", "u"]
    after = store.get("u")
    assert after is not None and after.events == 1 and after.recent == ["books-3"] and after.purchased == []
    assert after.offsets == {0: 3}


def test_forgetting_an_unknown_user_is_harmless() -> None:
    rec = Recommender(build().settings)
    store = DictProfileStore()
    result = rec.process([forget("ghost"), forget("ghost")], store)
    assert result.forgotten == ["ghost", "ghost"] and result.applied == 0 and store.get("ghost") is None


def test_decay_clock_survives_timestamps_far_from_its_origin() -> None:
    """Found while building the worker fuzz test: ts 0 among current events divided by zero, a far ts overflowed."""
    clock = DecayClock(86_400.0)
    clock.log2_growth(1.7e9)
    assert clock.growth(0.0) == 2.0**-GROWTH_LOG2_BOUND > 0.0
    assert clock.growth(1e300) == 2.0**GROWTH_LOG2_BOUND < float("inf")


def test_core_keeps_working_after_absurd_but_valid_timestamps() -> None:
    rec = build()
    store = DictProfileStore()
    for n, ts in enumerate([1.7e9, 1.7e9 + 1, 0.0, 5.0, 9.9e10, 1.7e9 + 2]):
        for k in range(3):
            result = rec.process([Event("u", "click", ts, item_id=f"coffee-{(3 * n + k) % 10}")], store)
            assert result.applied == 1
            assert all(np.isfinite(i.score) for i in result.recommendations[0].items)
    assert rec.ranker.steps > 0
    assert np.isfinite(np.asarray(rec.ranker.snapshot()["params"]["weight"], float)).all()


def test_evaluation_skips_forget_requests() -> None:
    """A replayed log may hold privacy requests: they are neither scored nor learned as interactions."""
    from streamrec.io.logs import Record
    from tests.lab.test_evaluation import Spy, job, records

    recs = records()
    recs.insert(5, Record("events", "u", forget("u", 2.5).to_dict(), 2.5))
    spy = Spy()
    ranks, _, _, _ = _replay(spy, job(recs))
    assert len(ranks) == 5 and [c[0] for c in spy.calls if c[0] != "upsert"] == ["recommend", "learn"] * 5
