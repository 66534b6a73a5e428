from __future__ import annotations

import base64
import tracemalloc

import numpy as np
import orjson
import pytest

from streamrec.model.events import Event
from streamrec.model.profiles import (
    HEADER,
    MAGIC,
    SCALES,
    ProfileFormatError,
    UserProfile,
    applied_count,
    apply_event,
    category_affinity,
    profiles_to_bytes,
)
from streamrec.settings import Settings

S = Settings.of(embedding_dim=3, recent_items=3, max_categories=2, profile_half_life_s=10.0, intent_half_life_s=1.0)
E1 = np.array([1.0, 0.0, 0.0], np.float32)
E2 = np.array([0.0, 1.0, 0.0], np.float32)


def test_weighted_decayed_sum_and_intent() -> None:
    p = UserProfile.new("u", 3)
    apply_event(p, Event("u", "purchase", 0.0, item_id="a"), E1, "x", S.profile)
    apply_event(p, Event("u", "view", 10.0, item_id="b"), E2, "y", S.profile)
    # long term: purchase weight 3 halved once, plus view 0.3
    np.testing.assert_allclose(p.long_term, [1.5, 0.3, 0.0], rtol=1e-6)
    # intent: 10 half-lives later the purchase is almost gone
    np.testing.assert_allclose(p.intent, [3.0 * 2**-10, 0.3, 0.0], rtol=1e-6)
    assert p.recent == ["a", "b"] and p.purchased == ["a"] and p.events == 2
    assert p.categories == pytest.approx({"x": 1.5, "y": 0.3})


def test_bounded_state() -> None:
    p = UserProfile.new("u", 3)
    for i, cat in enumerate(["a", "b", "c", "c", "a"]):
        apply_event(p, Event("u", "click", float(i), item_id=f"i{i}"), E1, cat, S.profile)
    assert p.recent == ["i2", "i3", "i4"]
    assert len(p.categories) == 2


def test_revisit_moves_item_to_front() -> None:
    p = UserProfile.new("u", 3)
    for item in ["a", "b", "a"]:
        apply_event(p, Event("u", "click", 1.0, item_id=item), E1, None, S.profile)
    assert p.recent == ["b", "a"]


def test_redelivered_offsets_are_noops() -> None:
    p = UserProfile.new("u", 3)
    assert apply_event(p, Event("u", "click", 1.0, item_id="a"), E1, None, S.profile, partition=0, offset=5)
    before = p.to_bytes()
    assert not apply_event(p, Event("u", "click", 1.0, item_id="a"), E1, None, S.profile, partition=0, offset=5)
    assert not apply_event(p, Event("u", "click", 1.0, item_id="a"), E1, None, S.profile, partition=0, offset=4)
    assert p.to_bytes() == before
    assert apply_event(p, Event("u", "click", 2.0, item_id="b"), E1, None, S.profile, partition=0, offset=6)


def test_search_updates_intent_only() -> None:
    p = UserProfile.new("u", 3)
    apply_event(p, Event("u", "search", 0.0, query="q"), E2, None, S.profile)
    np.testing.assert_allclose(p.long_term, 0.0)
    np.testing.assert_allclose(p.intent, [0.0, 0.5, 0.0])
    assert p.recent == []


def test_serialisation_is_compact_and_lossless_enough() -> None:
    s = Settings()
    p = UserProfile.new("user-1", s.retrieval.embedding_dim)
    rng = np.random.default_rng(0)
    for i in range(50):
        apply_event(
            p,
            Event("user-1", "click", float(i), item_id=f"item-{i}"),
            rng.normal(size=384).astype(np.float32),
            f"c{i % 7}",
            s.profile,
        )
    raw = p.to_bytes()
    q = UserProfile.from_bytes(raw)
    assert (q.recent, q.categories.keys(), q.events) == (p.recent, p.categories.keys(), 50)
    for stored, original in ((q.long_term, p.long_term), (q.intent, p.intent)):
        cosine = float(stored @ original) / float(np.linalg.norm(stored) * np.linalg.norm(original))
        assert cosine > 0.9999
    assert len(raw) < 1300  # 2 × 384 int8 components and their scales, the header, 20 recent ids, 7 categories


def _busy_profile() -> UserProfile:
    p = UserProfile.new("user-7", 4)
    for i, (kind, part) in enumerate([("view", 0), ("purchase", 1), ("click", 0)]):
        apply_event(
            p,
            Event("user-7", kind, 10.0 + i, item_id=f"i{i}"),
            np.arange(4, dtype=np.float32) + i,
            f"c{i}",
            Settings().profile,
            partition=part,
            offset=100 + i,
        )
    return p


def test_binary_format_round_trips_and_its_header_gives_the_applied_count() -> None:
    p = _busy_profile()
    raw = p.to_bytes()
    q = UserProfile.from_bytes(raw)
    assert (q.user_id, q.recent, q.purchased, q.offsets, q.events, q.last_ts) == (
        "user-7",
        ["i0", "i1", "i2"],
        ["i1"],
        {0: 102, 1: 101},
        3,
        12.0,
    )
    assert q.categories == pytest.approx(p.categories)
    for stored, original in ((q.long_term, p.long_term), (q.intent, p.intent)):
        peak = float(np.abs(original).max())
        assert float(np.abs(stored).max()) == pytest.approx(peak, rel=1e-6)  # the largest component: exact
        np.testing.assert_allclose(stored, original, atol=peak / 254 + 1e-7)  # the rest: within half a step
    assert applied_count(raw) == 3
    assert q.to_bytes() == raw  # read and written unchanged: the same bytes


def test_a_first_event_stores_one_vector_and_reads_back_two_that_change_apart() -> None:
    p = UserProfile.new("u", 3)
    apply_event(p, Event("u", "view", 5.0, item_id="a"), E1, "x", S.profile)
    one = p.to_bytes()
    q = UserProfile.from_bytes(one)
    np.testing.assert_array_equal(q.long_term, p.long_term)
    np.testing.assert_array_equal(q.intent, p.intent)
    assert q.to_bytes() == one
    apply_event(q, Event("u", "view", 6.0, item_id="b"), E2, "x", S.profile)  # decays the two at their own rates
    np.testing.assert_allclose(q.long_term, [0.3 * 2**-0.1, 0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(q.intent, [0.15, 0.3, 0.0], rtol=1e-6)
    two = q.to_bytes()
    vectors = HEADER.size + SCALES.size + 1  # after the flags byte
    assert (one[vectors - 1], one.index(b'{"u"') - vectors) == (1, 3)  # shared: one vector of 3 components
    assert (two[vectors - 1], two.index(b'{"u"') - vectors) == (0, 6)
    assert UserProfile.from_bytes(two).to_bytes() == two


def test_a_format_3_record_of_an_earlier_release_reads_the_same_and_is_rewritten_as_format_4() -> None:
    p = _busy_profile()
    new = p.to_bytes()
    dim = len(p.long_term)
    body = HEADER.size + SCALES.size
    lists = new[body + 1 + 2 * dim :]
    old = b"".join((HEADER.pack(MAGIC, 3, p.events, p.last_ts, dim), new[HEADER.size : body], new[body + 1 :]))
    q = UserProfile.from_bytes(old)
    assert q.to_bytes() == new
    assert (applied_count(old), q.recent, q.offsets, orjson.loads(lists)["u"]) == (3, p.recent, p.offsets, "user-7")
    assert len(old) == len(new) - 1  # the flags byte
    same = UserProfile.new("s", 3)
    apply_event(same, Event("s", "view", 1.0, item_id="a"), E2, None, S.profile)
    shared = same.to_bytes()  # a format-3 record kept both copies: it reads as the shared one does
    v = shared[body + 1 : body + 1 + 3]
    old = b"".join((HEADER.pack(MAGIC, 3, 1, 1.0, 3), shared[HEADER.size : body], v, v, shared[body + 4 :]))
    assert UserProfile.from_bytes(old).to_bytes() == shared


def test_a_format_2_float16_profile_from_a_pre_release_is_refused_clearly() -> None:
    p = _busy_profile()
    lists = {"u": p.user_id, "r": p.recent, "c": p.categories, "p": p.purchased, "s": ["x", "y"]}
    head = HEADER.pack(MAGIC, 2, p.events, p.last_ts, len(p.long_term))
    old = b"".join(
        (
            head,
            p.long_term.astype(np.float16).tobytes(),
            p.intent.astype(np.float16).tobytes(),
            orjson.dumps(lists | {"o": {str(k): v for k, v in p.offsets.items()}}),
        )
    )
    for read in (UserProfile.from_bytes, applied_count):
        with pytest.raises(ProfileFormatError, match="profile format 2 is from a pre-release streamrec and no longer"):
            read(old)


def test_a_profile_in_a_format_from_a_newer_version_is_refused_not_misread() -> None:
    raw = bytearray(_busy_profile().to_bytes())
    raw[1] = 5  # the version byte: a layout this version does not know
    for read in (UserProfile.from_bytes, applied_count):
        with pytest.raises(ProfileFormatError, match="profile format 5 is not one this streamrec reads"):
            read(bytes(raw))
    with pytest.raises(ProfileFormatError, match="not a stored profile"):
        UserProfile.from_bytes(b"\x00" + bytes(raw[1:]))
    with pytest.raises(ProfileFormatError, match="not a stored profile"):
        UserProfile.from_bytes(MAGIC + b"\x03")  # shorter than a header


def test_a_format_1_json_profile_from_a_pre_release_is_refused_clearly() -> None:
    p = _busy_profile()
    pack = lambda v: base64.b64encode(v.astype(np.float16).tobytes()).decode()  # noqa: E731
    old = orjson.dumps(
        {
            "v": 1,
            "u": p.user_id,
            "l": pack(p.long_term),
            "i": pack(p.intent),
            "t": p.last_ts,
            "n": p.events,
            "r": p.recent,
            "c": p.categories,
            "p": p.purchased,
            "s": ["x", "y"],
            "o": {str(k): v for k, v in p.offsets.items()},
        }
    )
    for read in (UserProfile.from_bytes, applied_count):
        with pytest.raises(ProfileFormatError, match="format-1 JSON profiles were pre-release"):
            read(old)


def test_stored_profiles_take_their_length_in_memory_not_a_serialiser_buffer() -> None:
    """The table keeps one record per user: each must cost its length (a bare orjson result kept ~32 KiB)."""
    profiles = [_busy_profile() for _ in range(200)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [p.to_bytes() for p in profiles]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < sum(len(raw) + 128 for raw in kept)  # the object header and the list slot, not a buffer


def test_category_affinity_shares() -> None:
    p = UserProfile.new("u", 3)
    p.categories = {"a": 3.0, "b": 1.0}
    np.testing.assert_allclose(category_affinity(p, ["a", "b", "z", None]), [0.75, 0.25, 0.0, 0.0])


def test_profiles_to_bytes_gives_each_profile_its_own_record_to_the_byte() -> None:
    rng = np.random.default_rng(11)
    profiles = []
    for i in range(40):
        p = UserProfile.new(f"u{i}", 64)
        p.long_term[:] = rng.standard_normal(64) * 10.0 ** rng.integers(-6, 6)
        p.intent[:] = rng.standard_normal(64) if i % 3 else 0.0  # zero vectors are stored as zeros
        p.recent, p.categories, p.offsets, p.events, p.last_ts = [f"i{i}", "x"], {"c": 0.5}, {0: i}, i, 1.5 * i
        profiles.append(p)
    profiles[5].intent[3] = np.nan  # a vector that is not finite is stored as zeros, as one at a time
    profiles[7].intent[:] = profiles[7].long_term  # equal vectors: stored once
    records = profiles_to_bytes(profiles)
    assert records == [p.to_bytes() for p in profiles]
    assert len(records[7]) == len(records[8]) - 64 - len("7") + len("8")
    assert len(set(records)) == len(profiles)
    assert profiles_to_bytes([]) == []
    odd = UserProfile.new("odd", 8)  # a profile of another dimension: each on its own
    assert profiles_to_bytes([profiles[0], odd]) == [profiles[0].to_bytes(), odd.to_bytes()]


def test_hides_live_in_the_profile_bounded_and_a_profile_without_them_is_unchanged() -> None:
    from streamrec.model.profiles import apply_hide

    cfg = Settings.of(max_hidden=2).profile
    p = UserProfile.new("u", 3)
    apply_event(p, Event("u", "view", 5.0, item_id="a"), E1, "x", cfg)
    plain = p.to_bytes()
    assert b'"hi"' not in plain and b'"hc"' not in plain
    assert UserProfile.from_bytes(plain).to_bytes() == plain  # a profile from before hides reads the same
    assert apply_hide(p, Event("u", "hide", 6.0, item_id="i1"), cfg, partition=0, offset=7)
    assert not apply_hide(p, Event("u", "hide", 6.0, item_id="i1"), cfg, partition=0, offset=7)  # redelivered
    apply_hide(p, Event("u", "hide", 7.0, context={"category": "shoes"}), cfg)
    apply_hide(p, Event("u", "hide", 8.0, item_id="i2"), cfg)
    apply_hide(p, Event("u", "hide", 9.0, item_id="i3"), cfg)  # past max_hidden: the oldest goes
    assert (p.hidden_items, p.hidden_categories, p.events, p.last_ts) == (["i2", "i3"], ["shoes"], 5, 5.0)
    assert p.recent == ["a"] and p.categories == {"x": pytest.approx(0.3)}  # a hide is no interest
    back = UserProfile.from_bytes(p.to_bytes())
    assert (back.hidden_items, back.hidden_categories, applied_count(p.to_bytes())) == (["i2", "i3"], ["shoes"], 5)
