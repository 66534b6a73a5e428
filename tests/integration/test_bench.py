"""``streamrec bench`` end to end at a tiny size, on its own real local broker: every figure lands in the JSON."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
import torch

from streamrec.lab.bench import BenchOptions, run_bench
from streamrec.settings import Settings

TAOBAO = Path(__file__).resolve().parents[3] / "shared/datasets/taobao-userbehavior-sample/UserBehavior_head.csv"
pytestmark = pytest.mark.integration

FIGURES = (
    "ceiling_events_per_s",
    "worker_events_per_s",
    "worker_over_ceiling",
    "latency_ms_p50",
    "latency_ms_p99",
    "encoder_items_per_s",
    "encoder_items_per_s_one_process",
    "encoder_processes",
    "encoder_device",
    "new_item_visible_ms_p99",
    "withdrawn_absent_ms_p99",
    "withdrawn_refreshed_ms_p99",
    "rss_bytes_per_user",
    "rss_core_bytes_per_user",
    "eval_events_per_s",
)


def test_bench_measures_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    taobao = TAOBAO if TAOBAO.exists() else None
    opts = BenchOptions(
        items=600,
        users=80,
        events=3_000,
        latency_rate=100.0,
        latency_s=2.0,
        encoder_texts=64,
        encoder_processes=2,
        new_items=5,
        new_item_rate=20.0,
        withdrawals=3,
        withdrawal_rate=2.0,
        withdrawal_events_per_s=40.0,
        taobao=taobao,
        taobao_limit=2_000,
        eval_limit=1_000,
    )
    run_bench(Settings(), opts, out)
    data = orjson.loads(out.read_bytes())
    assert [k for k in FIGURES if k not in data] == []
    assert (data["events"], data["latency_events"], data["new_items"]) == (3_000, 200, 5)
    # the worker drained the whole backlog: one recommendation at least per user, each user's last event reflected
    assert data["recommendations"] >= data["users"] > 0
    assert data["worker_over_ceiling"] == pytest.approx(data["worker_events_per_s"] / data["ceiling_events_per_s"])
    assert 0 < data["latency_ms_p50"] <= data["latency_ms_p99"]
    cpu = data["latency_cpu_cores"]  # where the cores went while the latency was measured
    assert sorted(cpu) == ["bench", "broker", "core", "worker"] and all(0.0 < c < os.cpu_count() for c in cpu.values())
    assert 0 < data["new_item_visible_ms_p50"] <= data["new_item_visible_ms_p99"]
    # the three most listed items withdrawn: gone from new lists within 2 s, every holder's list replaced in 10 s
    assert data["withdrawn_items"] == 3 and data["withdrawn_holders"] > 0 and data["withdrawn_refresh_missing"] == 0
    assert 0 < data["withdrawn_absent_ms_p50"] <= data["withdrawn_absent_ms_p99"] < 2_000
    assert 0 < data["withdrawn_refreshed_ms_p50"] <= data["withdrawn_refreshed_ms_p99"] < 10_000
    assert data["encoder_device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert data["encoder_processes"] == (1 if torch.cuda.is_available() else 2)
    assert data["eval_events_per_s"] > 0 and data["machine"]["cores"] == os.cpu_count()
    if taobao is None:
        assert data["taobao"] is None
    else:
        assert data["taobao"]["events"] > 0 and data["taobao"]["worker_events_per_s"] > 0
