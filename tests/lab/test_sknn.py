"""V-SKNN on hand-computed toy logs: neighbours, similarities, item scores, the sample bound, sessions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.lab.sknn import SknnBaseline, SknnParams
from streamrec.model.events import Event
from streamrec.settings import Settings

ROWS = ["a", "b", "c", "d", "e", "f"]


def toy(params: SknnParams) -> SknnBaseline:
    """Five sessions (no gaps inside one, none of 30 minutes between users), at t = 0, 100, …, each a second per item:

    S0 u1 a b c · S1 u2 b d · S2 u3 a c e · S3 u4 c f · S4 me a c
    """
    sknn = SknnBaseline(Settings(), params)
    log = [("u1", "abc", 0), ("u2", "bd", 100), ("u3", "ace", 200), ("u4", "cf", 300), ("me", "ac", 400)]
    for user, items, t0 in log:
        for n, item in enumerate(items):
            sknn.learn(Event(user, "view", float(t0 + n), item_id=item))
    return sknn


def test_linear_decay_neighbours_and_item_scores_by_hand() -> None:
    """me's session is [a, c]: linear weights a = 1/2, c = 2/2 = 1.

    Sessions sharing an item (me's own S4 left out): S0 {a,b,c} = 0.5 + 1 = 1.5, S2 {a,c,e} = 1.5, S3 {c,f} = 1;
    S1 {b,d} shares nothing. With k = 2 the neighbours are S2 and S0 (tied at 1.5: the more recent S2 first).
    Item scores sum the neighbours' similarities: a = c = 1.5 + 1.5 = 3, b (S0) = e (S2) = 1.5; ties go to the
    more popular item (c: 4 views, a: 3; b: 2, e: 1). a and c are me's own recent items, so the list is b, e.
    """
    sknn = toy(SknnParams(k=2, sample=3, decay="linear"))
    sessions, sims = sknn.neighbours("me")
    assert sessions.tolist() == [2, 0]
    assert sims.tolist() == [1.5, 1.5]
    assert sknn.scores("me") == {"a": 3.0, "c": 3.0, "b": 1.5, "e": 1.5}
    assert list(sknn.scores("me")) == ["c", "a", "b", "e"]
    assert sknn.recommend("me", 401.0, 2) == ["b", "e"]


def test_the_sample_keeps_only_the_most_recent_candidate_sessions() -> None:
    """sample = 2 keeps the two most recent candidates, S3 (last event t 301) and S2 (t 202), and drops S0 (t 2).

    Neighbours: S2 = 1.5, S3 = 1. Scores: c = 1.5 + 1 = 2.5, a = 1.5, e = 1.5, f = 1 → c, a, e, f; without me's own
    a and c the list is e, f.
    """
    sknn = toy(SknnParams(k=2, sample=2, decay="linear"))
    sessions, sims = sknn.neighbours("me")
    assert sessions.tolist() == [2, 3]
    assert sims.tolist() == [1.5, 1.0]
    assert sknn.scores("me") == {"c": 2.5, "a": 1.5, "e": 1.5, "f": 1.0}
    assert sknn.recommend("me", 401.0, 2) == ["e", "f"]


def test_log_decay_weights_by_hand() -> None:
    """log: the p-th of n items weighs 1/log10(n - p + 1.7): c (newest) 1/log10(1.7), a 1/log10(2.7).

    S0 = S2 = 1/log10(2.7) + 1/log10(1.7) ≈ 2.3182 + 4.3394 = 6.6576, S3 = 4.3394; k = 3 keeps all three, so
    c (in all three) = 2 · 6.6576 + 4.3394 = 17.6545, a (S0, S2) = 13.3152, b (S0) = e (S2) = 6.6576, f (S3) = 4.3394.
    """
    sknn = toy(SknnParams(k=3, sample=3, decay="log"))
    sessions, sims = sknn.neighbours("me")
    newest = 1 / math.log10(1.7)
    both = 1 / math.log10(2.7) + newest
    assert sessions.tolist() == [2, 0, 3]
    np.testing.assert_allclose(sims, [both, both, newest])
    scores = sknn.scores("me")
    assert list(scores) == ["c", "a", "b", "e", "f"]
    np.testing.assert_allclose(list(scores.values()), [17.6545, 13.3152, 6.6576, 6.6576, 4.3394], atol=1e-4)


def test_sessions_split_on_a_gap_or_a_new_session_id_and_the_query_is_the_latest_session() -> None:
    sknn = SknnBaseline(Settings(), SknnParams(k=5, sample=5, session_gap_s=1800.0))
    sknn.learn(Event("u", "view", 0.0, item_id="a"))
    sknn.learn(Event("u", "view", 1799.0, item_id="b"))  # within the gap: same session
    sknn.learn(Event("u", "view", 1799.0 + 1801.0, item_id="c"))  # past it: a new one
    sknn.learn(Event("v", "view", 0.0, item_id="a", session_id="s1"))
    sknn.learn(Event("v", "view", 10.0, item_id="b", session_id="s2"))  # a new session id, however close
    sknn.learn(Event("v", "view", 9000.0, item_id="c", session_id="s2"))  # the same id, however far
    assert [list(s) for s in sknn.session_items] == [[0, 1], [2], [0], [1, 2]]
    query = sknn.query("u")
    assert query is not None and query[1] == [2]  # only u's latest session, {c}
    # u's query {c} shares c with v's session s2 = {b, c}: b scores, c is u's own
    assert sknn.scores("u") == {"b": 1.0, "c": 1.0}


def test_a_repeat_moves_the_item_to_the_end_of_the_session() -> None:
    """Session [a, b, a] is [b, a]: a is the newest (weight 2/2), b weighs 1/2."""
    sknn = SknnBaseline(Settings(), SknnParams(decay="linear"))
    for n, item in enumerate("aba"):
        sknn.learn(Event("u", "view", float(n), item_id=item))
    query = sknn.query("u")
    assert query is not None
    assert [sknn.ids[r] for r in query[1]] == ["b", "a"]
    assert query[2] == [0.5, 1.0]


def test_cold_users_get_popularity_and_bad_parameters_are_refused() -> None:
    sknn = toy(SknnParams())
    assert sknn.recommend("stranger", 500.0, 3) == sknn.popularity.top(3, set())
    with pytest.raises(ValueError, match="decay"):
        SknnParams(decay="cubic")
