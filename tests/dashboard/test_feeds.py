"""The topic logs behind the page: dead letters, the catalogue, the ranker's weights — all bounded."""

from __future__ import annotations

import orjson
import pytest

from streamrec.dashboard import feeds
from streamrec.dashboard.feeds import BinnedRate, CatalogueLog, DeadLetterLog, WeightHistory
from streamrec.model.events import dead_letter, dumps
from streamrec.model.ranker import FEATURES


def test_dead_letters_are_counted_per_reason_and_the_last_ones_kept_in_full() -> None:
    log = DeadLetterLog()
    for i in range(25):
        reason = "not JSON" if i % 5 else "unknown event type 'like'"
        log.add(dumps(dead_letter("events", f"bad {i}".encode(), reason, b"u1", 3, i)), 1_000 * i)
    assert log.total == 25
    assert log.by_reason == {"not JSON": 20, "unknown event type 'like'": 5}
    assert log.by_topic == {"events": 25}
    view = log.to_dict()
    assert len(view["recent"]) == feeds.RECENT_DEAD_LETTERS == 20
    newest = view["recent"][0]
    assert (newest["value"], newest["key"], newest["offset"], newest["partition"]) == ("bad 24", "u1", 24, 3)
    assert [r["reason"] for r in view["by_reason"]] == ["not JSON", "unknown event type 'like'"]


def test_odd_dead_letter_records_are_shown_not_fatal() -> None:
    log = DeadLetterLog()
    log.add(b"\xff not json")
    log.add(b"[1, 2]")
    log.add(dumps({"source_topic": "items", "reason": "r", "value_b64": "***", "ts": 1.0}))
    log.add(dumps(dead_letter("items", b"x" * 5_000, "too big")))
    assert log.by_reason["(unreadable dead-letter record)"] == 2
    recent = log.to_dict()["recent"]
    assert recent[1]["value"] == "(not base64)"
    assert recent[0]["value"] == "x" * feeds.SHOWN_VALUE_CHARS + "…"


def test_reasons_beyond_the_cap_count_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "MAX_REASONS", 3)
    log = DeadLetterLog()
    for i in range(6):
        log.add(dumps(dead_letter("events", b"", f"reason {i}")))
    assert log.by_reason == {"reason 0": 1, "reason 1": 1, "reason 2": 1, feeds.OTHER_REASONS: 3}


def embedding(item_id: str, title: str, category: str | None = None) -> bytes:
    value = {
        "item_id": item_id,
        "title": title,
        "ts": 1.0,
        "embedding": "AAAA",
        "dim": 1,
        "model": "m",
        "source": "text",
    }
    if category is not None:
        value["category"] = category
    return orjson.dumps(value)


def test_the_catalogue_keeps_titles_bounded_and_the_newest_items_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "MAX_TITLES", 3)
    log = CatalogueLog()
    for i in range(25):
        log.add(embedding(f"i{i}", f"title {i}", "coffee"), 10_000 + 500 * i)
    log.add(b"not json")
    log.add(None)
    assert log.records == 25
    assert list(log.items) == ["i22", "i23", "i24"]
    assert log.describe("i24") == {"title": "title 24", "category": "coffee"}
    assert log.describe("i0") == {"title": "", "category": None}
    view = log.to_dict()
    assert [it["item_id"] for it in view["newest"]][:2] == ["i24", "i23"] and len(view["newest"]) == 20
    t, per_s = view["encoder_rate"]["t"], view["encoder_rate"]["per_s"]
    assert t == [10.0, 20.0] and per_s == [20 / feeds.RATE_BIN_S, 5 / feeds.RATE_BIN_S]


def test_rates_keep_a_bounded_window_and_fill_empty_bins() -> None:
    r = BinnedRate(bin_s=1.0, bins=4)
    for t in (0.5, 1.5, 1.7, 9.2):
        r.add(t)
    assert r.series() == ([6.0, 7.0, 8.0, 9.0], [0.0, 0.0, 0.0, 1.0])
    assert len(r.counts) <= 4
    assert r.series(now=11.0)[0] == [8.0, 9.0, 10.0, 11.0]


def snapshot(worker: str, weights: list[float], ts: float, features: list[str] | None = None) -> bytes:
    return orjson.dumps(
        {
            "model": "fusion",
            "steps": 3,
            "features": features or list(FEATURES),
            "params": {"weight": weights, "grad_sq": [0.0] * len(weights)},
            "ts": ts,
            "worker": worker,
        }
    )


def test_weights_come_from_snapshots_until_workers_expose_them() -> None:
    h = WeightHistory()
    n = len(FEATURES)
    h.add_snapshot(b"fusion/a:1", snapshot("a:1", [1.0] * n, 10.0))
    h.add_snapshot(b"fusion/b:2", snapshot("b:2", [2.0] * n, 12.0))
    h.add_snapshot(b"fusion/b:2", snapshot("b:2", [0.5] * n, 11.0))  # older than the newest plotted: skipped
    h.add_snapshot(b"fusion", snapshot("", [3.0] * n, 13.0))  # single-worker format: a weight, not a worker
    h.add_snapshot(b"fusion/c:3", b"{broken")
    view = h.to_dict()
    assert (view["source"], view["t"], view["values"]["price"]) == ("snapshots", [10.0, 12.0, 13.0], [1.0, 2.0, 3.0])
    assert h.snapshot_keys == {b"fusion/a:1", b"fusion/b:2", b"fusion/c:3"}
    h.add_snapshot(b"fusion/c:3", None)  # tombstone: that worker is gone
    assert h.snapshot_keys == {b"fusion/a:1", b"fusion/b:2"}
    h.add(20.0, {"price": 0.7, "seen": 0.1}, "stats")
    h.add_snapshot(b"fusion/a:1", snapshot("a:1", [9.0] * n, 30.0))  # stats win from now on
    assert h.to_dict() == {
        "source": "stats",
        "features": ["price", "seen"],
        "t": [20.0],
        "values": {"price": [0.7], "seen": [0.1]},
    }
    assert b"fusion/a:1" in h.snapshot_keys  # snapshots still find workers


def test_a_new_feature_list_starts_a_new_history() -> None:
    h = WeightHistory(points=2)
    for t in (1.0, 2.0, 3.0):
        h.add(t, {"a": t}, "stats")
    assert h.to_dict()["t"] == [2.0, 3.0]
    h.add(4.0, {"a": 1.0, "b": 2.0}, "stats")
    assert h.to_dict()["values"] == {"a": [1.0], "b": [2.0]}
