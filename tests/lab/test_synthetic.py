from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamrec.io.logs import read_log
from streamrec.lab.synthetic import FAVOURITE_SHARE, LOG_START_TS, main, make_events, make_shop, write_log
from streamrec.model.events import event_from_dict, item_from_dict


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


def test_a_written_log_reads_back_as_the_same_catalogue_and_events(tmp_path: Path) -> None:
    shop = make_shop(n_items=40, n_users=10, seed=3, ts=50.0)
    events = make_events(shop, 300, seed=3, start_ts=60.0, step_s=2.0)
    path = tmp_path / "shop.jsonl"
    assert write_log(path, shop, events) == 340
    records = list(read_log(path, "jsonl"))
    assert [item_from_dict(r.value) for r in records if r.topic == "items"] == shop.items
    assert [event_from_dict(r.value) for r in records if r.topic == "events"] == events


def test_the_command_writes_the_log_it_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shop.jsonl"
    assert main([str(path), "--items", "16", "--users", "4", "--events", "50", "--step-s", "5"]) == 0
    lines = path.read_bytes().splitlines()
    assert len(lines) == 66 and "16 items and 50 events (66 lines)" in capsys.readouterr().err
    first_event = orjson.loads(lines[16])
    assert first_event["ts"] == LOG_START_TS and orjson.loads(lines[17])["ts"] == LOG_START_TS + 5
    with pytest.raises(SystemExit):
        main([str(path), "--events", "0"])
