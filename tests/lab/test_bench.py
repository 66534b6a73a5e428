"""The bench's pure parts: the cohorts of the backlog, the memory growth windows, the targets and the report."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streamrec.cli import cli
from streamrec.lab import bench
from streamrec.lab.bench import (
    ISA_FLAGS,
    BenchOptions,
    BenchResult,
    MemorySample,
    cohort_events,
    cpu_description,
    format_table,
    growth_windows,
    memory_sample,
    targets,
)
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.settings import Settings

N_EVENTS = 3_001
COHORTS = 3


def test_cohorts_bring_fresh_users_and_equal_events_in_order() -> None:
    shop = make_shop(200, 50)
    events = cohort_events(shop, N_EVENTS, COHORTS, seed=7, start_ts=100.0)
    assert len(events) == N_EVENTS
    assert [e.ts for e in events] == [100.0 + i for i in range(N_EVENTS)]
    per = N_EVENTS // COHORTS
    cohorts = [events[:per], events[per : 2 * per], events[2 * per :]]
    assert [len(c) for c in cohorts] == [1_000, 1_000, 1_001]
    users = [{e.user_id for e in c} for c in cohorts]
    assert users[0] <= set(shop.favourites)  # cohort 0: the shop's own ids
    assert all(u.endswith(f"~{k}") for k in (1, 2) for u in users[k])
    assert not (users[0] & users[1]) and not (users[1] & users[2]) and not (users[0] & users[2])
    # each cohort draws its own events, not a relabelled copy of the first
    assert [e.item_id for e in cohorts[1][:50]] != [e.item_id for e in cohorts[0][:50]]
    assert cohort_events(shop, N_EVENTS, 1, seed=7, start_ts=100.0) == make_events(shop, N_EVENTS, 7, 100.0)
    assert cohorts[0] == make_events(shop, per, 7, 100.0)


def test_memory_is_read_as_the_last_batch_left_it_not_mid_batch() -> None:
    stats = {"events": 4096, "profiles": 3000, "rss_bytes": 900_000, "core_rss_bytes": 500_000}
    settled = stats | {"rss_settled_bytes": 700_000, "core_rss_settled_bytes": 400_000}
    assert memory_sample(settled) == MemorySample(4096, 3000, 700_000, 400_000)
    idle = {"events": 0, "profiles": 0, "rss_bytes": 600_000, "core_rss_bytes": 300_000}
    assert memory_sample(idle | {"rss_settled_bytes": 0, "core_rss_settled_bytes": 0}) == MemorySample(
        0, 0, 600_000, 300_000
    )


def test_growth_windows_per_new_user_between_marks() -> None:
    ready = MemorySample(0, 0, 1_000, 100)
    samples = [
        MemorySample(100, 10, 2_000, 600),
        MemorySample(400, 40, 31_000, 3_100),  # first with >= 1/3 of 900 events
        MemorySample(500, 45, 40_000, 4_000),
        MemorySample(700, 70, 61_000, 6_100),  # first with >= 2/3
    ]
    final = MemorySample(900, 100, 64_000, 9_100)
    total, core = growth_windows(ready, samples, final, 900, 3)
    assert total == [750.0, 1_000.0, 100.0]
    assert core == [75.0, 100.0, 100.0]
    assert growth_windows(ready, samples, final, 900, 1) == ([630.0], [90.0])


def test_targets_and_report_put_the_ratios_first() -> None:
    figures = {
        "worker_over_floor": 0.6,
        "latency_over_transport_p99": 3.5,
        "rss_bytes_per_user": 2_000.0,
        "rss_bytes_per_user_windows": [1_900.0, 2_000.0, 2_500.0],
        "worker_events_per_s": 1_234.0,
    }
    goals = targets(figures)
    assert {k: g["met"] for k, g in goals.items()} == {
        "worker_over_floor": True,
        "latency_over_transport_p99": False,
        "rss_bytes_per_user": True,
    }
    assert targets({})["worker_over_floor"] == {"target": ">= 0.5", "value": None, "met": None}
    result = BenchResult(machine={"cpu_model": "Some CPU", "cores": 2, "isa": {"avx2": True, "amx": False}})
    result.figures.update(figures)
    lines = format_table(result).splitlines()
    assert lines[1].split()[-4:] == ["0.600", ">=", "0.5", "yes"]
    assert "1,900, 2,000, 2,500" in lines[4]
    assert lines[6].startswith("on this machine (Some CPU, 2 cores; avx2)")
    assert any(line.startswith("worker, backlog drained") and "1,234" in line for line in lines[6:])


def test_cpu_model_and_isa_flags_under_the_issues_names(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    model, isa = cpu_description(info)
    assert model == "Some Xeon"
    assert isa == {"avx2": True, "avx512": True, "avx512_bf16": True, "amx": True, "amx_bf16": False}
    assert list(isa) == list(ISA_FLAGS)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2\n")
    model, isa = cpu_description(info)
    assert model and not any(isa.values())


def _fake_phases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every phase of the bench with a stub that records its name and returns its figures."""
    called: list[str] = []

    def phase(name: str, figures: dict[str, Any]) -> Callable[..., Any]:
        async def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
            called.append(name)
            return figures

        return run

    class Watcher:
        async def stop(self) -> None:
            called.append("watcher stopped")

    class Worker:
        def stop(self) -> None:
            called.append("worker stopped")

    async def drain(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], Any, Any]:
        called.append("drain")
        return {"worker_events_per_s": 100.0, "ceiling_events_per_s": 1_000.0}, Worker(), Watcher()

    def encoder(*args: Any) -> dict[str, Any]:
        called.append("encoder")
        return {k: 1 for k in ("encoder_path", "encoder_path_reason", "encoder_items_per_s", "encoder_processes")} | {
            "encoder_items_per_s_one_process": 1
        }

    monkeypatch.setattr(bench, "encoder_throughput", encoder)
    monkeypatch.setattr(bench, "publish_backlog", phase("publish", {}))
    monkeypatch.setattr(bench, "faust_floor", phase("floor", {"faust_floor_events_per_s": 400.0}))
    transport = {"transport_latency_ms_p50": 5.0, "transport_latency_ms_p99": 10.0}
    monkeypatch.setattr(bench, "transport_latency", phase("transport", transport))
    monkeypatch.setattr(bench, "drain_backlog", drain)
    latency = {"latency_ms_p50": 10.0, "latency_ms_p99": 25.0, "latency_cpu_cores": {}}
    monkeypatch.setattr(bench, "steady_latency", phase("latency", latency))
    monkeypatch.setattr(bench, "_freshness", phase("freshness", {}))
    monkeypatch.setattr(bench, "_taobao_and_eval", phase("taobao_eval", {}))
    return called


@pytest.mark.parametrize("latency_only", [True, False])
def test_latency_only_runs_just_what_the_latency_ratio_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, latency_only: bool
) -> None:
    called = _fake_phases(monkeypatch)
    opts = replace(BenchOptions.quick(), items=20, users=5, events=30, latency_only=latency_only)
    result = asyncio.run(bench._run(Settings(), opts, tmp_path))
    expected = ["publish", "transport", "drain", "latency", "watcher stopped", "worker stopped"]
    if not latency_only:
        expected = ["encoder", "publish", "floor", "transport", "drain", "latency", "freshness"]
        expected += ["watcher stopped", "worker stopped", "taobao_eval"]
    assert called == expected
    assert result.figures["latency_over_transport_p99"] == 2.5
    assert ("worker_over_floor" in result.figures) is not latency_only


def test_only_latency_reaches_the_bench_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BenchOptions] = []
    monkeypatch.setattr(bench, "run_bench", lambda settings, opts, json_out: seen.append(opts))
    for args in (["bench", "--quick", "--only", "latency"], ["bench", "--quick"], ["bench", "--only", "latency"]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert [o.latency_only for o in seen] == [True, False, True]
    assert seen[0].events == BenchOptions.quick().events and seen[2].events == BenchOptions().events


def test_gc_pauses_measures_this_process_collections_only_inside_the_block() -> None:
    before = list(gc.callbacks)
    with bench.GcPauses() as pauses:
        junk = [[] for _ in range(200_000)]
        gc.collect()
    del junk
    assert pauses.longest_ms > 0.0
    assert gc.callbacks == before  # the callback is gone: nothing is measured after the block
    seen = pauses.longest_ms
    gc.collect()
    assert pauses.longest_ms == seen
