from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from streamrec.io.logs import CsvMapping, Record, ReplayStats, TimestampParser, ingest_report, read_log


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
    assert stats.rows == stats.used == 101_682  # ratings and catalogue lines
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


# --- timestamps -------------------------------------------------------------------------------------------

EPOCH = 1_569_888_000.0
"""2019-10-01 00:00:00 UTC."""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2019-10-01T00:00:00", EPOCH),  # no zone: UTC, never the machine's local time
        ("2019-10-01 00:00:00", EPOCH),
        ("2019-10-01T00:00:00Z", EPOCH),
        ("2019-10-01 00:00:00 UTC", EPOCH),
        ("2019-10-01T02:00:00+02:00", EPOCH),
        ("2019-10-01 02:00:00+0200", EPOCH),
        ("2019-09-30T19:30:00-04:30", EPOCH),
        ("2019-10-01T00:00:00.25Z", EPOCH + 0.25),
        ("2019-10-01 00:00:00.5 UTC", EPOCH + 0.5),
        ("2019-10-01T02:00:00.125+02:00", EPOCH + 0.125),
        ("2019-10-01", EPOCH),
        ("1569888000", EPOCH),
        ("1569888000.75", EPOCH + 0.75),
        ("1569888000000", EPOCH),
        ("1569888000250", EPOCH + 0.25),
        ("  1569888000  ", EPOCH),
    ],
)
def test_auto_timestamps_parse_to_the_exact_epoch(raw: str, expected: float) -> None:
    assert TimestampParser("auto")(raw, 2) == expected


@pytest.mark.parametrize(
    ("raw", "expected", "shape"),
    [
        ("0", 0.0, "unix seconds"),
        ("100000000000", 1e11, "unix seconds"),  # MAX_EVENT_TS itself is still seconds (year 5138)
        ("100000000001", 100_000_000.001, "unix milliseconds"),  # one above: milliseconds (1973)
        ("1700000000", 1.7e9, "unix seconds"),
        ("1700000000000", 1.7e9, "unix milliseconds"),
    ],
)
def test_seconds_and_milliseconds_told_apart_by_magnitude(raw: str, expected: float, shape: str) -> None:
    parser = TimestampParser("auto")
    assert parser(raw, 7) == expected
    assert (parser.shape, parser.shape_line) == (shape, 7)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            "1569888000",
            "1569888000000",
            "'1569888000000' is unix milliseconds, but this column's timestamps are unix seconds (from line 2)",
        ),
        (
            "2019-10-01 00:00:00 UTC",
            "1569888000",
            "'1569888000' is unix seconds, but this column's timestamps are ISO 8601 (space, UTC) (from line 2)",
        ),
        (
            "2019-10-01 00:00:00 UTC",
            "2019-10-01T00:00:00Z",
            "is ISO 8601 (T, Z), but this column's timestamps are ISO 8601 (space, UTC)",
        ),
        ("2019-10-01T00:00:00+02:00", "2019-10-01T00:00:00", "is ISO 8601 (T, no zone), but"),
    ],
)
def test_a_column_mixing_formats_is_an_error_naming_the_lines(first: str, second: str, message: str) -> None:
    parser = TimestampParser("auto")
    parser(first, 2)
    with pytest.raises(ValueError, match=re.escape(message)):
        parser(second, 3)


def test_same_shape_with_other_fractions_and_offsets_is_one_format() -> None:
    parser = TimestampParser("auto")
    assert parser("2019-10-01T00:00:00+02:00", 2) == EPOCH - 7200
    assert parser("2019-10-01T00:00:00.5+01:00", 3) == EPOCH - 3600 + 0.5  # DST changes the offset, not the format


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("iso", "2019-10-01 00:00:00 UTC", EPOCH),
        ("iso", "2019-10-01T00:00:00", EPOCH),
        ("unix", "1569888000.5", EPOCH + 0.5),
        ("unix", "1569888000000", 1_569_888_000_000.0),  # as told: the event contract then rejects it
        ("unix_ms", "1569888000", 1_569_888.0),
    ],
)
def test_explicit_timestamp_formats(fmt: str, raw: str, expected: float) -> None:
    assert TimestampParser(fmt)(raw, 2) == expected


@pytest.mark.parametrize(
    ("fmt", "raw", "message"),
    [
        ("auto", "", "empty timestamp"),
        ("auto", "yesterday", "'yesterday' is neither ISO 8601 nor a unix number"),
        ("auto", "nan", "'nan' is not a finite number"),
        ("unix", "2019-10-01 00:00:00 UTC", "is not a number"),
        ("iso", "1569888000", "'1569888000' is neither ISO 8601"),
    ],
)
def test_bad_timestamps(fmt: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TimestampParser(fmt)(raw, 2)


# --- csv: drop, session, reporting ----------------------------------------------------------------------

SHOP = """event_time,event_type,product_id,category_code,brand,price,user_id,user_session
2019-10-01 00:00:00 UTC,view,p1,electronics.audio.headphone,sony,79.90,u1,s1
2019-10-01 00:00:10 UTC,cart,p1,electronics.audio.headphone,sony,79.90,u1,s1
2019-10-01 00:00:20 UTC,remove_from_cart,p1,electronics.audio.headphone,sony,79.90,u1,s1

2019-10-01 00:00:30 UTC,view,p2,,,12.00,u2,
2019-10-01 00:00:40 UTC,wishlist,p2,,,12.00,u2,s2
2019-10-01 00:00:50 UTC,purchase,p2,,,12.00,u2
2019-10-01 00:01:00 UTC,purchase,p1,electronics.audio.headphone,sony,79.90,u1,s1
2019-10-01T00:01:10Z,view,p2,,,12.00,u1,s1
2019-10-01 00:01:20 UTC,remove_from_cart,p2,,,12.00,u2,s2
"""
SHOP_COLUMNS = (
    "user=user_id,item=product_id,type=event_type,ts=event_time,category=category_code,brand=brand,price=price"
)


def _shop(tmp_path: Path) -> tuple[list[Record], ReplayStats]:
    f = tmp_path / "shop.csv"
    f.write_text(SHOP)
    mapping = CsvMapping.from_options(
        SHOP_COLUMNS + ",session=user_session", "view=view,cart=add_to_cart,purchase=purchase,remove_from_cart=drop"
    )
    stats = ReplayStats()
    return list(read_log(f, "csv", mapping=mapping, stats=stats)), stats


def test_csv_drop_session_and_bad_rows(tmp_path: Path) -> None:
    records, stats = _shop(tmp_path)
    assert (stats.rows, stats.used, stats.skipped, stats.dropped) == (9, 4, 3, 2)  # the blank line is no row
    assert stats.dropped_types == {"remove_from_cart": 2}
    assert (stats.events, stats.items) == (4, 2)
    assert stats.reasons == [
        "line 7: event type 'wishlist' is not in --types (map it, or wishlist=drop)",
        "line 8: expected at least 8 fields, got 7: ['2019-10-01 00:00:50 UTC', 'purchase', 'p2', '', '', '12.00', "
        "'u2']",
        "line 10: timestamp '2019-10-01T00:01:10Z' is ISO 8601 (T, Z), but this column's timestamps are ISO 8601 "
        "(space, UTC) (from line 2): a column must keep one format",
    ]
    assert [(r.topic, r.key, r.ts, r.value.get("session_id")) for r in records] == [
        ("items", "p1", EPOCH, None),
        ("events", "u1", EPOCH, "s1"),
        ("events", "u1", EPOCH + 10, "s1"),
        ("items", "p2", EPOCH + 30, None),
        ("events", "u2", EPOCH + 30, None),  # an empty session cell sets no session_id
        ("events", "u1", EPOCH + 60, "s1"),
    ]
    assert records[0].value == {
        "item_id": "p1",
        "title": "",
        "ts": EPOCH,
        "category": "electronics.audio.headphone",
        "brand": "sony",
        "price": 79.9,
    }
    assert records[3].value == {"item_id": "p2", "title": "", "ts": EPOCH + 30, "price": 12.0}


def test_csv_without_session_column_sets_no_session(tmp_path: Path) -> None:
    f = tmp_path / "shop.csv"
    f.write_text(SHOP)
    mapping = CsvMapping.from_options(SHOP_COLUMNS, "view=view,cart=add_to_cart")
    events = [r for r in read_log(f, "csv", mapping=mapping) if r.topic == "events"]
    assert len(events) == 3 and all("session_id" not in r.value for r in events)


def test_csv_bad_price_skips_the_whole_row(tmp_path: Path) -> None:
    f = tmp_path / "shop.csv"
    f.write_text("t,u,i,ty,p\n1,u1,i1,view,N/A\n2,u1,i1,view,3.5\n")
    stats = ReplayStats()
    records = list(
        read_log(
            f, "csv", mapping=CsvMapping.from_options("ts=t,user=u,item=i,type=ty,price=p", "view=view"), stats=stats
        )
    )
    assert stats.reasons == ["line 2: bad price 'N/A'"]
    assert [(r.topic, r.ts) for r in records] == [("items", 2.0), ("events", 2.0)]
    assert (stats.events, stats.items, stats.used) == (1, 1, 1)


def test_csv_header_without_a_mapped_column(tmp_path: Path) -> None:
    f = tmp_path / "shop.csv"
    f.write_text(SHOP)
    mapping = CsvMapping.from_options(SHOP_COLUMNS + ",session=session", "view=view")
    with pytest.raises(ValueError, match="column 'session' is not in the header"):
        list(read_log(f, "csv", mapping=mapping))


def test_types_accept_drop_and_name_it_in_errors() -> None:
    mapping = CsvMapping.from_options("user=u,item=i,type=t,ts=x,session=s", "a=view,b=drop")
    assert (mapping.type_map, mapping.session, mapping.timestamp_format) == ({"a": "view", "b": "drop"}, "s", "auto")
    with pytest.raises(ValueError, match="or drop to leave a type out"):
        CsvMapping.from_options("user=u,item=i,type=t,ts=x", "a=ignore")


def _stats(rows: int, skipped: int, dropped: int = 0, events: int | None = None) -> ReplayStats:
    stats = ReplayStats(rows=rows, events=rows - skipped - dropped if events is None else events)
    for i in range(skipped):
        stats.skip(f"line {i + 2}", "bad")
    for _ in range(dropped):
        stats.drop("remove_from_cart")
    return stats


def test_ingest_report_lines() -> None:
    lines, problem = ingest_report(_stats(1_200, 7, dropped=30), 0.01, need_events=True)
    assert lines == [
        "1,200 rows read, 1,163 used, 7 skipped (bad), 30 dropped (--types): remove_from_cart 30",
        "first reasons for skipping (5 of 7):",
        "  line 2: bad",
        "  line 3: bad",
        "  line 4: bad",
        "  line 5: bad",
        "  line 6: bad",
    ]
    assert problem is None
    assert ingest_report(_stats(10, 0), 0.01, need_events=True) == (
        ["10 rows read, 10 used, 0 skipped (bad), 0 dropped (--types)"],
        None,
    )


@pytest.mark.parametrize(
    ("rows", "skipped", "max_skipped", "unusable"),
    [
        (100, 1, 0.01, False),  # exactly at the limit
        (100, 2, 0.01, True),  # just above
        (1_000, 10, 0.01, False),
        (1_000, 11, 0.01, True),
        (100, 29, 0.29, False),  # 0.29 * 100 is 28.999... in floats: the share is compared, not the product
        (100, 30, 0.29, True),
        (100, 0, 0.0, False),
        (100, 1, 0.0, True),
    ],
)
def test_max_skipped_boundary(rows: int, skipped: int, max_skipped: float, unusable: bool) -> None:
    _, problem = ingest_report(_stats(rows, skipped), max_skipped, need_events=True)
    assert (problem is not None) == unusable
    if unusable:
        assert problem == (
            f"{skipped / rows:.2%} of the rows were skipped as bad, more than --max-skipped {max_skipped:.2%}"
        )


def test_dropped_rows_do_not_count_against_max_skipped() -> None:
    _, problem = ingest_report(_stats(100, 1, dropped=90), 0.01, need_events=True)
    assert problem is None


@pytest.mark.parametrize(
    ("stats", "need_events", "problem"),
    [
        (ReplayStats(), True, "the log has no rows"),
        (_stats(5, 5), False, "no row of the log could be used"),
        (_stats(5, 0, dropped=5), True, "no row of the log could be used"),
        (_stats(5, 0, events=0), True, "no row of the log could be used"),  # items only: nothing to evaluate
        (_stats(5, 0, events=0), False, None),  # ... but a catalogue to publish
    ],
)
def test_nothing_usable(stats: ReplayStats, need_events: bool, problem: str | None) -> None:
    assert ingest_report(stats, 0.5, need_events)[1] == problem


def test_a_time_without_zone_is_utc_whatever_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert TimestampParser("auto")("2019-10-01 00:00:00", 2) == EPOCH
        assert TimestampParser("iso")("2019-10-01T00:00:00", 2) == EPOCH
    finally:
        monkeypatch.undo()
        time.tzset()
