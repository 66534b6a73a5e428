from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streamrec.io.logs import CsvMapping, ReplayStats, read_log


def test_taobao_full_file(taobao_path: Path) -> None:
    stats = ReplayStats()
    records = list(read_log(taobao_path, "taobao", stats=stats))
    events = [r for r in records if r.topic == "events"]
    items = [r for r in records if r.topic == "items"]
    assert (stats.rows, stats.skipped, len(events), len(items)) == (84_475, 0, 84_475, 55_368)
    assert Counter(e.value["type"] for e in events) == {"view": 75_872, "add_to_cart": 4_497 + 2_356, "purchase": 1_750}
    assert len({e.key for e in events}) == 815
    ts = [e.ts for e in events]
    assert ts == sorted(ts)
    # the catalogue comes first, stamped with the log's start, so no item's timestamp hints at its first event
    assert all(r.topic == "items" for r in records[: len(items)])
    assert {i.value["ts"] for i in items} == {ts[0]}
    assert items[0].value["title"] == "" and items[0].value["category"].isdigit()


def test_taobao_order_and_mapping(tmp_path: Path) -> None:
    f = tmp_path / "ub.csv"
    f.write_text("1,10,7,pv,300\n1,11,7,buy,100\n2,10,7,cart,200\n2,12,8,fav,200\n3,13,9,oops,1\n")
    stats = ReplayStats()
    records = list(read_log(f, "taobao", stats=stats))
    assert [(r.topic, r.key) for r in records] == [
        ("items", "11"),
        ("items", "10"),
        ("items", "12"),
        ("events", "1"),
        ("events", "2"),
        ("events", "2"),
        ("events", "1"),
    ]
    assert [r.value["type"] for r in records if r.topic == "events"] == [
        "purchase",
        "add_to_cart",
        "add_to_cart",
        "view",
    ]
    assert stats.skipped == 1 and "line 5" in stats.reasons[0]


def test_movielens_full(movielens_path: Path) -> None:
    stats = ReplayStats()
    records = list(read_log(movielens_path, "movielens", stats=stats))
    items = [r for r in records if r.topic == "items"]
    events = [r for r in records if r.topic == "events"]
    assert (len(items), len(events), stats.skipped) == (1_682, 100_000, 0)
    assert all(r.topic == "items" for r in records[:1_682])
    assert Counter(e.value["type"] for e in events)["purchase"] == 34_174 + 21_201
    toy = next(i for i in items if i.key == "1")
    assert toy.value["title"] == "Toy Story (1995)"
    assert "Animation, Children's, Comedy" in toy.value["description"]
    assert any("é" in i.value["title"] for i in items)  # Latin-1 decoded
    assert [e.ts for e in events] == sorted(e.ts for e in events)


CSV = """uid,sku,action,when,name,cat,price
a,s1,pageview,2024-01-01T10:00:00Z,Red shoe,shoes,10.5
a,s1,order,2024-01-01T10:05:00Z,Red shoe,shoes,10.5
b,s1,pageview,2024-01-01T09:00:00Z,Red shoe,shoes,12
b,s2,wishlist,2024-01-01T09:30:00Z,Mug,kitchen,3
"""


def test_csv_adapter_with_header(tmp_path: Path) -> None:
    f = tmp_path / "log.csv"
    f.write_text(CSV)
    mapping = CsvMapping.from_options(
        "user=uid,item=sku,type=action,ts=when,title=name,category=cat,price=price",
        "pageview=view,order=purchase",
        timestamp_format="iso",
    )
    stats = ReplayStats()
    records = list(read_log(f, "csv", mapping=mapping, stats=stats))
    summary = [(r.topic, r.key, r.value.get("type"), r.value.get("price")) for r in records]
    assert summary == [
        ("items", "s1", None, 12.0),  # b saw s1 first (09:00) at price 12
        ("events", "b", "view", None),
        ("items", "s1", None, 10.5),  # price changed: a new upsert
        ("events", "a", "view", None),
        ("events", "a", "purchase", None),
    ]
    assert stats.skipped == 1 and "'wishlist' is not in --types" in stats.reasons[0]


def test_csv_adapter_headerless_unix_ms(tmp_path: Path) -> None:
    f = tmp_path / "log.tsv"
    f.write_text("x\tu1\tclick\t1700000000000\nx\tu2\tclick\t1600000000000\n")
    mapping = CsvMapping.from_options("user=0,item=1,type=2,ts=3", "click=click", "unix_ms", "\t", has_header=False)
    records = list(read_log(f, "csv", mapping=mapping))
    assert [(r.value["item_id"], r.ts) for r in records] == [("u2", 1.6e9), ("u1", 1.7e9)]


@pytest.mark.parametrize(
    ("columns", "types", "message"),
    [
        ("user=u,item=i,type=t", "a=view", "needs timestamp"),
        ("user=u,item=i,type=t,ts=x,colour=c", "a=view", "unknown field"),
        ("user=u,item=i,type=t,ts=x", "a=like", "unknown event type"),
        ("user=u,item", "a=view", "name=value"),
    ],
)
def test_csv_mapping_errors(columns: str, types: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CsvMapping.from_options(columns, types)


def test_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "log.jsonl"
    f.write_text(
        '{"user_id": "u", "item_id": "i", "type": "click", "ts": 5}\n'
        '{"item_id": "i", "title": "Thing", "ts": 1}\n'
        "\n"
        '{"topic": "events", "value": {"user_id": "u", "type": "search", "query": "things", "ts": 3}}\n'
        '{"user_id": "u", "item_id": "i", "type": "like", "ts": 6}\n'
        "not json\n"
    )
    stats = ReplayStats()
    records = list(read_log(f, "jsonl", stats=stats))
    assert [(r.topic, r.ts) for r in records] == [("items", 1.0), ("events", 3.0), ("events", 5.0)]
    assert stats.skipped == 2 and stats.reasons[0].startswith("line 5: unknown event type")


def test_limit_reads_only_the_first_rows(taobao_path: Path) -> None:
    stats = ReplayStats()
    records = list(read_log(taobao_path, "taobao", limit=100, stats=stats))
    assert stats.rows == 100 and sum(r.topic == "events" for r in records) == 100
