"""The Faust/aiokafka internals the worker's workarounds rely on are all still there, in the version they were
written for; an upgrade fails here with what to re-check (streamrec/worker/faust_compat.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamrec.settings import Settings
from streamrec.worker import faust_compat


def test_installed_faust_is_the_version_the_workarounds_were_written_for() -> None:
    assert faust_compat.installed_version() == faust_compat.FAUST_VERSION, "\n".join(faust_compat.problems())


def test_every_patched_or_read_attribute_is_there() -> None:
    found = faust_compat.problems()
    assert found == [], "\n\n".join(found)


def test_a_version_bump_is_reported_with_every_workaround_to_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_compat, "installed_version", lambda: "0.16.0")
    (found,) = faust_compat.problems()
    assert "faust-streaming 0.16.0 is installed" in found and "written for 0.15.3" in found
    for workaround in (faust_compat.FETCH_WAIT, faust_compat.TRUE_HIGHWATERS, faust_compat.MESSAGE_HANDOFF):
        assert workaround in found


@pytest.mark.parametrize(
    ("owner", "name", "workaround", "upstream"),
    [
        (
            faust_aiokafka.AIOKafkaConsumerThread,
            "_highwaters",
            faust_compat.TRUE_HIGHWATERS,
            "faust/transport/drivers/aiokafka.py: AIOKafkaConsumerThread._highwaters",
        ),
        (
            faust_aiokafka.AIOKafkaConsumerThread,
            "_create_worker_consumer",
            faust_compat.FETCH_WAIT,
            "AIOKafkaConsumerThread._create_worker_consumer",
        ),
        (faust_aiokafka.Producer, "_ensure_producer", faust_compat.RAW_PRODUCER, "Producer._ensure_producer"),
    ],
)
def test_a_missing_class_attribute_is_reported_with_its_workaround_and_upstream_code(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, workaround: str, upstream: str
) -> None:
    monkeypatch.delattr(owner, faust_compat.ORIGINAL_PREFIX + name, raising=False)
    monkeypatch.delattr(owner, name)
    (found,) = faust_compat.problems()
    assert f".{name} " in found and workaround in found and "Why it exists:" in found and upstream in found


def test_missing_or_changed_instance_attributes_are_reported() -> None:
    probe = faust_compat.probe()
    # a consumer without _committed_offset, whose suspend_flow is not an asyncio.Event and that cannot be stopped
    changed = SimpleNamespace(in_transaction=probe.consumer.in_transaction, suspend_flow=object())
    found = faust_compat.problems(faust_compat.Probe(changed))
    assert [f.split(" is missing")[0] for f in found] == [
        "faust.transport.consumer.Consumer.suspend_flow (asyncio.Event, read)",
        "mode.services.Service._stopped and ._crashed (events, read)",
        "faust.transport.consumer.Consumer._committed_offset (mapping TP -> offset, read)",
    ]
    assert faust_compat.COMMITTED_OFFSET in found[-1]


def test_patches_are_installed_once_over_faust_originals() -> None:
    thread = faust_aiokafka.AIOKafkaConsumerThread
    faust_compat.apply(Settings())
    first = thread._highwaters
    faust_compat.apply(Settings())
    assert thread._highwaters is not first  # wrapped anew ...
    assert getattr(thread, faust_compat.ORIGINAL_PREFIX + "_highwaters") is not first  # ... around Faust's own
    assert asyncio.iscoroutinefunction(thread._highwaters)
