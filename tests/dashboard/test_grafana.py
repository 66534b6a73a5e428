"""The Grafana board and the compose ``monitoring`` profile, read as files: every query names a metric the
worker exports (from the worker's own ``/metrics`` rendering), and the provisioning points where it should."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.settings import Settings

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / "deploy" / "grafana" / "streamrec.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right", "by", "without"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)?\b")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported_families(metrics_page: str) -> dict[str, str]:
    """Metric family → type, from the ``# TYPE`` lines of a ``/metrics`` page."""
    out = {}
    for line in metrics_page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            out[name] = kind
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names and values left out)."""
    text = _STRING.sub("", expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = _GROUPING.sub("", text)
    text = _NUMBER.sub("", text)  # numbers and durations (offset 5m)
    names = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0).lower() in PROMQL_KEYWORDS:
            continue  # a function (or aggregation) call, or a keyword
        names.add(m.group(0))
    return names


def unknown_metrics(exprs: list[str], families: dict[str, str]) -> dict[str, set[str]]:
    """Per expression, the names it selects that the worker does not export (histogram series map to their
    family); an expression that selects no metric at all is reported too."""
    bad: dict[str, set[str]] = {}
    for expr in exprs:
        names = metric_names(expr)
        missing = set()
        for name in names:
            family = name
            for suffix in HISTOGRAM_SUFFIXES:
                base = name.removesuffix(suffix)
                if base != name and families.get(base) == "histogram":
                    family = base
            if family not in families:
                missing.add(name)
        if missing or not names:
            bad[expr] = missing or {"(no metric)"}
    return bad


def board_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana board: panel targets (rows' nested panels too) and query variables."""
    exprs: list[str] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            panels(panel.get("panels", []))

    panels(board.get("panels", []))
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_]+\s*\)\s*", query or "")
        if m:
            exprs.append(m.group(1))
        elif query:
            exprs.append(query)
    return exprs


def worker_metrics_page(tmp_path: Path) -> str:
    """The worker's real ``/metrics`` rendering, from an app built without a broker."""
    from streamrec.worker.app import create_app
    from streamrec.worker.telemetry import render

    _, worker = create_app(Settings.of(data_dir=str(tmp_path)), with_query_encoder=False)
    return render(worker.metrics(None))


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return exported_families(worker_metrics_page(tmp_path_factory.mktemp("worker")))


def test_every_board_query_names_a_metric_the_worker_exports(families: dict[str, str]) -> None:
    board = json.loads(BOARD.read_text())
    exprs = board_queries(board)
    assert len(exprs) >= 20  # every panel's queries and the worker variable were found
    assert unknown_metrics(exprs, families) == {}
    used = {name for e in exprs for name in metric_names(e)}
    # the board shows what matters most
    assert {
        "streamrec_events_total",
        "streamrec_consumer_lag",
        "streamrec_event_to_recommendation_ms_bucket",
        "streamrec_dead_letters_total",
        "streamrec_online_hits_total",
        "streamrec_online_scored_total",
        "streamrec_online_hit_rank_bucket",
    } <= used


def test_the_check_catches_a_query_on_a_metric_the_worker_does_not_export(families: dict[str, str]) -> None:
    assert unknown_metrics(['sum(rate(streamrec_bogus_total{instance=~"$instance"}[5m]))'], families) == {
        'sum(rate(streamrec_bogus_total{instance=~"$instance"}[5m]))': {"streamrec_bogus_total"}
    }
    assert unknown_metrics(["rate(streamrec_events_total_bucket[1m])"], families)  # not a histogram
    assert unknown_metrics(["up"], families) == {"up": {"up"}}
    assert unknown_metrics(["vector(1)"], families) == {"vector(1)": {"(no metric)"}}
    assert metric_names(
        'histogram_quantile(0.9, sum by (le) (rate(streamrec_event_to_recommendation_ms_bucket{le!="x"}[5m]))) '
        "/ on (instance) group_left streamrec_users offset 5m"
    ) == {"streamrec_event_to_recommendation_ms_bucket", "streamrec_users"}


def test_panels_use_the_provisioned_datasource() -> None:
    board = json.loads(BOARD.read_text())
    sources = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = sources["datasources"]
    assert (ds["type"], ds["url"]) == ("prometheus", "http://prometheus:9090")
    refs = [p["datasource"] for p in board["panels"] if p["type"] != "row"]
    refs += [t["datasource"] for p in board["panels"] for t in p.get("targets", [])]
    assert refs and all(r == {"type": "prometheus", "uid": ds["uid"]} for r in refs)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_the_monitoring_profile_scrapes_the_workers_and_publishes_on_loopback_only() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    monitoring = {name for name, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    for name in monitoring:
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/streamrec.yml").read_text())
    (prov,) = provider["providers"]
    assert grafana_mounts["./deploy/grafana/streamrec.json"].startswith(prov["options"]["path"] + "/")
    assert grafana_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["recommender"] and sd["port"] == int(
        services["recommender"]["environment"]["STREAMREC_WEB_PORT"]
    )
    assert job["metrics_path"] == "/metrics"
