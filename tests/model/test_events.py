from __future__ import annotations

import base64
import math

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.io.topics import load_topics
from streamrec.model.events import (
    Event,
    InvalidMessage,
    Item,
    ItemEmbedding,
    ItemWithdrawal,
    dead_letter,
    event_from_dict,
    item_from_dict,
    item_record_from_dict,
    parse_embedding_record,
    parse_event,
    parse_item,
    parse_item_embedding,
    parse_item_record,
)

SPECS = load_topics()


def test_valid_event_roundtrip() -> None:
    raw = b'{"user_id":"u1","item_id":"i1","type":"purchase","ts":5,"session_id":"s","context":{"page":"home"}}'
    e = parse_event(raw)
    assert e == Event("u1", "purchase", 5.0, item_id="i1", session_id="s", context={"page": "home"})
    assert parse_event(orjson.dumps(e.to_dict())) == e


def test_search_event_needs_query_not_item() -> None:
    e = parse_event(b'{"user_id":"u1","type":"search","ts":1,"query":"red shoes"}')
    assert (e.item_id, e.query) == (None, "red shoes")
    with pytest.raises(InvalidMessage, match="missing required field 'query'"):
        parse_event(b'{"user_id":"u1","type":"search","ts":1}')
    with pytest.raises(InvalidMessage, match="missing required field 'item_id'"):
        parse_event(b'{"user_id":"u1","type":"view","ts":1}')


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"user_id":"u","item_id":"i","type":"like","ts":1}', "unknown event type 'like'"),
        (b'{"user_id":"u","item_id":"i","type":"view"}', "missing required field 'ts'"),
        (b'{"user_id":5,"item_id":"i","type":"view","ts":1}', "'user_id' must be a string, got int"),
        (b'{"user_id":"u","item_id":"i","type":"view","ts":-1}', "'ts' must be >= 0"),
        (b'{"user_id":"u","item_id":"i","type":"view","ts":true}', "'ts' must be a number, got bool"),
        (b'{"user_id":"u","item_id":"i","type":"view","ts":NaN}', "malformed JSON"),
        (b'{"user_id":"","item_id":"i","type":"view","ts":1}', "'user_id' must have 1..256 characters"),
        (b'{"user_id":"u","item_id":"i","type":"view","ts":1,"extra":1}', "unknown field(s) in event: extra"),
    ],
)
def test_invalid_events_have_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_event(raw)
    assert reason in str(info.value)


def test_forget_user_needs_only_the_user() -> None:
    e = parse_event(b'{"user_id":"u1","type":"forget_user","ts":7}')
    assert e == Event("u1", "forget_user", 7.0) and e.is_forget
    assert not parse_event(b'{"user_id":"u1","item_id":"i","type":"view","ts":7}').is_forget
    with pytest.raises(InvalidMessage, match="missing required field 'user_id'"):
        parse_event(b'{"type":"forget_user","ts":7}')


def test_millisecond_timestamps_are_rejected() -> None:
    """Found building the worker fuzz test: a ts in milliseconds used to crash the core (decay-clock overflow)."""
    assert parse_event(b'{"user_id":"u","item_id":"i","type":"view","ts":99999999999}').ts == 99999999999.0
    with pytest.raises(InvalidMessage, match=r"'ts' must be Unix seconds <= 100000000000, got 1700000000000.0"):
        parse_event(b'{"user_id":"u","item_id":"i","type":"view","ts":1700000000000}')


def test_oversized_payload_rejected_before_parsing() -> None:
    raw = orjson.dumps({"user_id": "u", "item_id": "i", "type": "view", "ts": 1, "query": "x" * 900})
    with pytest.raises(InvalidMessage, match=f"payload of {len(raw)} bytes exceeds the limit of 500 bytes"):
        parse_event(raw, max_bytes=500)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"item_id": "i", "title": "t", "ts": 1, "price": -3}, "'price' must be >= 0"),
        ({"item_id": "i", "title": "t", "ts": 1, "price": 1e400}, "'price' must be finite"),
        ({"item_id": "i", "ts": 1}, "missing required field 'title'"),
        ({"item_id": "i", "title": 3, "ts": 1}, "'title' must be a string"),
    ],
)
def test_invalid_items(obj: dict, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        item_from_dict(obj)


def test_item_without_text() -> None:
    item = parse_item(b'{"item_id":"42","title":"","category":"7","ts":3}')
    assert (item.has_text, item.category) == (False, "7")
    assert Item("1", "Shoe", 0.0).has_text


def test_item_embedding_roundtrip_and_checks() -> None:
    vec = np.arange(4, dtype=np.float32) / 10
    emb = ItemEmbedding(Item("i", "t", 2.0, category="c", price=3.5), vec, "m", "text")
    back = parse_item_embedding(orjson.dumps(emb.to_dict()))
    assert back.item == Item("i", "t", 2.0, category="c", price=3.5)
    np.testing.assert_array_equal(back.vector, vec)
    bad = emb.to_dict() | {"dim": 5}
    with pytest.raises(InvalidMessage, match="wrong length"):
        parse_item_embedding(orjson.dumps(bad))


def test_dead_letter_keeps_original_bytes() -> None:
    rec = dead_letter("events", b"\xff\x00garbage", "malformed JSON", key=b"u1", partition=2, offset=9)
    assert base64.b64decode(rec["value_b64"]) == b"\xff\x00garbage"
    assert (rec["source_topic"], rec["partition"], rec["offset"], rec["reason"]) == ("events", 2, 9, "malformed JSON")
    jsonschema.validate(rec, SPECS["dead-letters"].schema)


# --- the hand-written validators agree with the published JSON Schemas ---------------------------------------

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=1e12),
    st.text(max_size=3),
    st.sampled_from(["u1", "i1", "view", "search", "purchase", "like", "shoes"]),
    st.just({}),
    st.just([]),
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": scalar,
        "item_id": scalar,
        "type": st.one_of(
            st.sampled_from(["view", "click", "add_to_cart", "purchase", "search", "forget_user", "hide", "bogus"]),
            scalar,
        ),
        "ts": scalar,
        "query": scalar,
        "session_id": scalar,
        "context": st.one_of(scalar, st.fixed_dictionaries({}, optional={"category": scalar})),
        "junk": scalar,
    },
)
item_like = st.fixed_dictionaries(
    {},
    optional={
        "item_id": scalar,
        "title": scalar,
        "ts": scalar,
        "price": scalar,
        "category": scalar,
        "brand": scalar,
        "description": scalar,
        "available": st.one_of(st.booleans(), scalar),
        "colour": scalar,
    },
)


def _schema_ok(obj: dict, name: str) -> bool:
    try:
        jsonschema.validate(obj, SPECS[name].schema)
    except jsonschema.ValidationError:
        return False
    return True


def _ours_ok(fn, obj: dict) -> bool:  # type: ignore[no-untyped-def]
    try:
        fn(obj)
    except InvalidMessage:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(event_like)
def test_event_validator_matches_schema(obj: dict) -> None:
    assert _ours_ok(event_from_dict, obj) == _schema_ok(obj, "events"), obj


@settings(max_examples=400, deadline=None)
@given(item_like)
def test_item_validator_matches_schema(obj: dict) -> None:
    assert _ours_ok(item_record_from_dict, obj) == _schema_ok(obj, "items"), obj


def test_schema_and_validator_agree_on_a_valid_event() -> None:
    obj = {"user_id": "u", "item_id": "i", "type": "add_to_cart", "ts": 1.5}
    assert _schema_ok(obj, "events") and _ours_ok(event_from_dict, obj)
    assert not math.isnan(event_from_dict(obj).ts)


# --- hides and withdrawals ----------------------------------------------------------------------------------


def test_hide_names_an_item_or_a_category() -> None:
    item = parse_event(b'{"user_id":"u","type":"hide","item_id":"i9","ts":4,"context":{"category":"shoes"}}')
    assert (item.item_id, item.hidden_category) == ("i9", None)  # with an item, the context is the item's
    cat = parse_event(b'{"user_id":"u","type":"hide","ts":4,"context":{"category":"shoes"}}')
    assert (cat.item_id, cat.hidden_category) == (None, "shoes")
    assert (
        parse_event(b'{"user_id":"u","type":"view","item_id":"i","ts":1,"context":{"category":"x"}}').hidden_category
        is None
    )
    for raw in (
        b'{"user_id":"u","type":"hide","ts":4}',
        b'{"user_id":"u","type":"hide","ts":4,"context":{"category":""}}',
    ):
        with pytest.raises(InvalidMessage, match=r"a hide event needs 'item_id' or a 'context\.category'"):
            parse_event(raw)


def test_item_records_upsert_or_withdraw() -> None:
    assert parse_item_record(b"i", None) == ItemWithdrawal("i")  # a tombstone: the key names the item
    assert parse_item_record(b"i", b'{"item_id":"i","available":false,"ts":5}') == ItemWithdrawal("i", 5.0)
    sold_out = b'{"item_id":"i","title":"Shoe","price":3,"available":false,"ts":6}'
    assert parse_item_record(b"i", sold_out) == ItemWithdrawal("i", 6.0)
    relisted = parse_item_record(b"i", b'{"item_id":"i","title":"Shoe","available":true,"ts":7}')
    assert relisted == Item("i", "Shoe", 7.0)
    for raw, reason in [
        (b'{"item_id":"i","available":false}', "missing required field 'ts'"),
        (b'{"item_id":"i","available":"no","ts":1}', "'available' must be true or false"),
        (b'{"item_id":"i","available":false,"ts":1,"price":-1}', "'price' must be >= 0"),
    ]:
        with pytest.raises(InvalidMessage, match=reason):
            parse_item_record(b"i", raw)
    with pytest.raises(InvalidMessage, match="tombstone's key must be the item id"):
        parse_item_record(None, None)
    with pytest.raises(InvalidMessage, match="is a withdrawal, not an upsert"):
        item_from_dict({"item_id": "i", "title": "t", "ts": 1, "available": False})


def test_embedding_records_carry_withdrawals_as_the_encoder_passes_them_on() -> None:
    withdrawal = ItemWithdrawal("i", 8.0)
    raw = orjson.dumps(withdrawal.to_dict())
    assert parse_embedding_record(b"i", raw) == withdrawal
    assert parse_embedding_record(b"i", None) == ItemWithdrawal("i")
    jsonschema.validate(withdrawal.to_dict(), SPECS["item-embeddings"].schema)
    emb = ItemEmbedding(Item("i", "t", 2.0), np.ones(4, np.float32) / 2, "m", "text")
    assert parse_embedding_record(b"i", orjson.dumps(emb.to_dict())).item == emb.item
    jsonschema.validate(emb.to_dict(), SPECS["item-embeddings"].schema)
    for bad in (withdrawal.to_dict() | {"title": "t"}, emb.to_dict() | {"available": False}):
        assert not _schema_ok(bad, "item-embeddings")
        with pytest.raises(InvalidMessage):
            parse_embedding_record(b"i", orjson.dumps(bad))
