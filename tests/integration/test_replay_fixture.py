"""``streamrec replay`` publishes the e-commerce fixture into the real local broker with only --columns and --types."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from streamrec.cli import cli
from streamrec.io.kafka import read_to_end
from streamrec.io.logs import CsvMapping, ReplayStats, read_log
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker
from streamrec.settings import Settings
from tests.io.test_log_cli import FIXTURE, FIXTURE_COLUMNS, FIXTURE_SUMMARY, FIXTURE_TYPES

pytestmark = pytest.mark.integration
PREFIX = "replay-fixture."


def test_replay_the_ecommerce_fixture(broker: LocalBroker) -> None:
    settings = Settings.of(broker=broker.url, topic_prefix=PREFIX)
    asyncio.run(apply_topics(settings.kafka))
    args = ["--broker", broker.url, "replay", str(FIXTURE), "--format", "csv"]
    args += ["--columns", FIXTURE_COLUMNS, "--types", FIXTURE_TYPES]
    result = CliRunner().invoke(
        cli,
        args,
        env={"STREAMREC_TOPIC_PREFIX": PREFIX},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == FIXTURE_SUMMARY
    stats = ReplayStats()
    expected = list(read_log(FIXTURE, "csv", CsvMapping.from_options(FIXTURE_COLUMNS, FIXTURE_TYPES), stats=stats))
    assert (stats.events, stats.items) == (652, 85)
    assert f"published {len(expected)} records (652 events, 85 item upserts)" in result.stdout

    async def read() -> tuple[list[Any], list[Any]]:
        events: list[Any] = []
        items: list[Any] = []
        await read_to_end(settings.kafka, settings.kafka.topic("events"), events.append)
        await read_to_end(settings.kafka, settings.kafka.topic("items"), items.append)
        return events, items

    events, items = asyncio.run(read())
    values = [orjson.loads(e.value) for e in events]
    assert len(values) == 652 and len(items) == 85
    assert Counter(v["type"] for v in values) == Counter(r.value["type"] for r in expected if r.topic == "events")
    assert all(v["session_id"] and e.key == v["user_id"].encode() for e, v in zip(events, values, strict=True))
    assert {orjson.loads(i.value)["item_id"] for i in items} == {r.key for r in expected if r.topic == "items"}
