"""``streamrec bench --quick`` end to end, on its own real local broker: every figure lands in the JSON, and the
ratios agree with their inputs."""

from __future__ import annotations

import os
import statistics
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import torch

from streamrec.encoding.encoder import cpu_flags, native_bf16
from streamrec.lab.bench import ISA_FLAGS, TARGETS, BenchOptions, run_bench
from streamrec.settings import Settings

TAOBAO = Path(__file__).resolve().parents[3] / "shared/datasets/taobao-userbehavior-sample/UserBehavior_head.csv"
pytestmark = pytest.mark.integration

RATIOS = ("worker_over_floor", "latency_over_transport_p99", "rss_bytes_per_user")
FIGURES = (
    *RATIOS,
    "faust_floor_events_per_s",
    "transport_latency_ms_p50",
    "transport_latency_ms_p99",
    "worker_events_per_s",
    "latency_ms_p50",
    "latency_ms_p99",
    "rss_bytes_per_user_windows",
    "rss_bytes_per_user_total",
    "rss_core_bytes_per_user",
    "ceiling_events_per_s",
    "worker_over_ceiling",
    "encoder_items_per_s",
    "encoder_items_per_s_one_process",
    "encoder_processes",
    "encoder_device",
    "encoder_path",
    "new_item_visible_ms_p99",
    "withdrawn_absent_ms_p99",
    "withdrawn_refreshed_ms_p99",
    "eval_events_per_s",
    "targets",
    "machine",
)
SAME_SIZE = (0.5, 2.0)
"""The floor's outputs are the worker's size: a profile within this factor of the worker's stored one."""


def test_bench_measures_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    taobao = TAOBAO if TAOBAO.exists() else None
    opts = replace(BenchOptions.quick(taobao), encoder_processes=2)
    run_bench(Settings(), opts, out)
    data = orjson.loads(out.read_bytes())
    assert [k for k in FIGURES if k not in data] == []
    live = int(opts.latency_rate * opts.latency_s)
    assert (data["events"], data["latency_events"], data["transport_events"], data["new_items"]) == (
        opts.events,
        live,
        live,
        opts.new_items,
    )
    # the worker drained the whole backlog: one recommendation at least per user, each user's last event reflected
    assert data["recommendations"] >= data["users"] > opts.users  # three cohorts of fresh users
    for key in ("faust_floor_events_per_s", "worker_events_per_s", "ceiling_events_per_s", "eval_events_per_s"):
        assert data[key] > 0, key
    assert data["worker_over_floor"] == pytest.approx(data["worker_events_per_s"] / data["faust_floor_events_per_s"])
    assert data["worker_over_ceiling"] == pytest.approx(data["worker_events_per_s"] / data["ceiling_events_per_s"])
    assert 0 < data["transport_latency_ms_p50"] <= data["transport_latency_ms_p99"]
    assert 0 < data["latency_ms_p50"] <= data["latency_ms_p99"]
    assert data["latency_over_transport_p99"] == pytest.approx(
        data["latency_ms_p99"] / data["transport_latency_ms_p99"]
    )
    windows = data["rss_bytes_per_user_windows"]
    assert len(windows) == opts.windows and data["rss_bytes_per_user"] == statistics.median(windows)
    assert data["rss_bytes_per_user_total"] > 0
    low, high = SAME_SIZE
    assert low < data["faust_floor_profile_bytes"] / data["profile_bytes_per_user"] < high
    goals = data["targets"]
    assert sorted(goals) == sorted(TARGETS) and all(goals[k]["value"] == data[k] for k in RATIOS)
    assert goals["worker_over_floor"]["met"] == (data["worker_over_floor"] >= TARGETS["worker_over_floor"][1])
    drain = data["drain_cpu_us_per_event"]  # what each of the worker's processes spent per event of the drain
    assert sorted(drain) == sorted(data["drain_cpu_cores"]) == ["core", "worker"] and min(drain.values()) > 0
    cpu = data["latency_cpu_cores"]  # where the cores went while the latency was measured
    assert sorted(cpu) == ["bench", "broker", "core", "worker"] and all(0.0 < c < os.cpu_count() for c in cpu.values())
    assert 0 < data["new_item_visible_ms_p50"] <= data["new_item_visible_ms_p99"]
    if torch.cuda.is_available():
        assert (data["encoder_device"], data["encoder_path"], data["encoder_processes"]) == ("cuda", "cuda-fp16", 1)
    else:
        path = "cpu-bf16" if native_bf16(cpu_flags()) else "cpu-fp32"
        assert (data["encoder_device"], data["encoder_path"], data["encoder_processes"]) == ("cpu", path, 2)
    machine = data["machine"]
    assert machine["cores"] == os.cpu_count() and machine["cpu_model"]
    assert machine["isa"] == {name: flag in cpu_flags() for name, flag in ISA_FLAGS.items()}
    printed = capsys.readouterr().out
    assert printed.index("worker / Faust floor") < printed.index(f"on this machine ({machine['cpu_model']}")
    # the three most listed items withdrawn: gone from new lists within 2 s, every holder's list replaced in 10 s
    assert data["withdrawn_items"] == 3 and data["withdrawn_holders"] > 0 and data["withdrawn_refresh_missing"] == 0
    assert 0 < data["withdrawn_absent_ms_p50"] <= data["withdrawn_absent_ms_p99"] < 2_000
    assert 0 < data["withdrawn_refreshed_ms_p50"] <= data["withdrawn_refreshed_ms_p99"] < 10_000
    if taobao is None:
        assert data["taobao"] is None
    else:
        assert data["taobao"]["events"] > 0 and data["taobao"]["worker_events_per_s"] > 0
