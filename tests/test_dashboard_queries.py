"""The Grafana board asks only for what Ray exports: every query's metric and labels are in a scrape
of a node's metrics port, written here in Ray 2.47's format (its `ray_` prefix and its own labels
beside ours). File-only: no Ray, no Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashboard_queries import missing_from_scrape, queried_series

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/ohlcv.json").read_text())

# The labels Ray puts on every application metric, then ours (workflows/observability/metrics.py).
RAY = 'Component="core_worker",JobId="02000000",NodeAddress="172.18.0.4",SessionName="session_2025-01-06_09-00-00_123456_1",Version="2.47.1",WorkerId="9f3c0a"'
BUCKETS = ["0.1", "0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0", "+Inf"]
SCRAPE = "\n".join([
    "# HELP ray_ohlcv_runs_total Workflow runs by timeframe and final status.",
    "# TYPE ray_ohlcv_runs_total counter",
    f'ray_ohlcv_runs_total{{{RAY},status="succeeded",timeframe="1m"}} 58.0',
    f'ray_ohlcv_runs_total{{{RAY},status="failed",timeframe="1m"}} 2.0',
    f'ray_ohlcv_runs_total{{{RAY},status="succeeded",timeframe="upkeep"}} 1.0',
    "# HELP ray_ohlcv_step_seconds Duration of successful workflow steps.",
    "# TYPE ray_ohlcv_step_seconds histogram",
    *(f'ray_ohlcv_step_seconds_bucket{{{RAY},le="{le}",step="aggregate",timeframe="1m"}} {i + 1}.0' for i, le in enumerate(BUCKETS)),
    f'ray_ohlcv_step_seconds_count{{{RAY},step="aggregate",timeframe="1m"}} 12.0',
    f'ray_ohlcv_step_seconds_sum{{{RAY},step="aggregate",timeframe="1m"}} 41.5',
    "# HELP ray_ohlcv_candles_written_total Candles inserted or updated.",
    "# TYPE ray_ohlcv_candles_written_total counter",
    f'ray_ohlcv_candles_written_total{{{RAY},timeframe="1m"}} 3480.0',
    "# HELP ray_ohlcv_validation_failures_total Failed audit checks.",
    "# TYPE ray_ohlcv_validation_failures_total counter",
    f'ray_ohlcv_validation_failures_total{{{RAY},check="high_low",timeframe="5m"}} 3.0',
    "# HELP ray_ohlcv_freshness_lag_seconds Now minus the end of the newest published window.",
    "# TYPE ray_ohlcv_freshness_lag_seconds gauge",
    f'ray_ohlcv_freshness_lag_seconds{{{RAY},timeframe="1m"}} 7.25',
    "# Ray's own metrics are in the same scrape and are not ours to check.",
    f'ray_tasks{{{RAY},Name="aggregate",State="RUNNING"}} 1.0',
    "",
])


def _without(scrape: str, pattern: str, replacement: str = "") -> str:
    """The scrape with every match of `pattern` replaced: a series or a label that is not exported."""
    return re.sub(pattern, replacement, scrape, flags=re.MULTILINE)


def _expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_board_is_the_pipelines_with_a_timeframe_selector():
    assert DASHBOARD["uid"] == "ohlcv-pipeline" and DASHBOARD["title"] == "OHLCV pipeline"
    assert DASHBOARD["schemaVersion"] >= 36
    [variable] = DASHBOARD["templating"]["list"]
    assert variable["name"] == "timeframe" and variable["type"] == "query"
    assert variable["multi"] and variable["includeAll"]
    assert variable["query"]["query"] == "label_values(ray_ohlcv_runs_total, timeframe)"


def test_every_panel_and_query_uses_the_provisioned_prometheus():
    everything = [DASHBOARD["templating"]["list"][0], *DASHBOARD["panels"]]
    everything += [target for panel in DASHBOARD["panels"] for target in panel["targets"]]
    assert {json.dumps(item["datasource"], sort_keys=True) for item in everything} == {'{"type": "prometheus", "uid": "prometheus"}'}
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_the_board_queries_the_five_metrics_with_these_labels():
    assert queried_series(DASHBOARD) == {
        "ray_ohlcv_runs_total": {"timeframe", "status"},
        "ray_ohlcv_step_seconds_bucket": {"le", "timeframe", "step"},
        "ray_ohlcv_candles_written_total": {"timeframe"},
        "ray_ohlcv_validation_failures_total": {"timeframe", "check"},
        "ray_ohlcv_freshness_lag_seconds": {"timeframe"},
    }


@pytest.mark.parametrize("expr", _expressions(DASHBOARD), ids=lambda expr: expr.split("ray_ohlcv_")[1].split("{")[0])
def test_every_panel_query_is_per_timeframe_and_follows_the_selector(expr):
    [labels] = queried_series({"panels": [{"targets": [{"expr": expr}]}]}).values()
    assert "timeframe" in labels
    assert re.search(r"\bby \(([^)]*\b)?timeframe\b", expr), "one line per timeframe"
    assert 'timeframe=~"$timeframe"' in expr
    if re.search(r"\b(rate|increase)\(", expr):
        assert "[$__rate_interval]" in expr


def test_a_scrape_with_every_series_leaves_nothing_missing():
    assert missing_from_scrape(DASHBOARD, SCRAPE) == []


@pytest.mark.parametrize(("pattern", "replacement", "missing"), [
    # A gauge no scheduled tick has set yet: Ray exports nothing for it.
    (r"^ray_ohlcv_freshness_lag_seconds\{.*\n", "", ["ray_ohlcv_freshness_lag_seconds: no series in the scrape"]),
    # Only _sum and _count: the quantile panels have no buckets.
    (r"^ray_ohlcv_step_seconds_bucket\{.*\n", "", ["ray_ohlcv_step_seconds_bucket: no series in the scrape"]),
    # A metric recorded without the timeframe label (as before every metric carried it).
    (r'(^ray_ohlcv_candles_written_total\{.*),timeframe="1m"', r"\1", ["ray_ohlcv_candles_written_total: no series has the label timeframe"]),
    (r'(^ray_ohlcv_validation_failures_total\{.*),check="high_low"', r"\1",
     ["ray_ohlcv_validation_failures_total: no series has the label check"]),
    (r'(^ray_ohlcv_runs_total\{.*),status="\w+",timeframe="\w+"', r"\1",
     ["ray_ohlcv_runs_total: no series has the label status", "ray_ohlcv_runs_total: no series has the label timeframe"]),
])
def test_a_scrape_without_a_series_or_a_label_names_exactly_that(pattern, replacement, missing):
    scrape = _without(SCRAPE, pattern, replacement)
    assert scrape != SCRAPE
    assert missing_from_scrape(DASHBOARD, scrape) == missing


def test_a_label_carried_by_only_some_series_is_not_missing():
    scrape = SCRAPE + f'ray_ohlcv_runs_total{{{RAY}}} 0.0\n'
    assert missing_from_scrape(DASHBOARD, scrape) == []


@pytest.mark.parametrize(("expr", "series"), [
    ('sum(rate(ray_ohlcv_a_total{x="1", y=~"$v"}[$__rate_interval])) by (z)', {"ray_ohlcv_a_total": {"x", "y", "z"}}),
    ("sum without (instance) (ray_ohlcv_a_total)", {"ray_ohlcv_a_total": {"instance"}}),
    # Grafana's variables and macros are not labels; braces and commas inside a value are text.
    ('sum by ($group, t) (ray_ohlcv_a_total{x=~"a{1,2}|b", y!="}"})', {"ray_ohlcv_a_total": {"t", "x", "y"}}),
    ("histogram_quantile(0.9, rate(ray_ohlcv_s_bucket[5m]))", {"ray_ohlcv_s_bucket": {"le"}}),
    ('label_values(ray_ohlcv_a_total{x="1", y="2"}, t)', {"ray_ohlcv_a_total": {"x", "y", "t"}}),
    # Each side of a binary operation has its own aggregation; other exporters' metrics are not ours.
    ("sum by (a) (ray_ohlcv_a_total) / sum by (b) (ray_ohlcv_b_total) > on() ray_tasks",
     {"ray_ohlcv_a_total": {"a"}, "ray_ohlcv_b_total": {"b"}}),
])
def test_the_labels_a_query_uses(expr, series):
    # In a row's collapsed panels, as Grafana nests them.
    dashboard = {"panels": [{"type": "row", "panels": [{"targets": [{"expr": expr}]}]}]}
    assert queried_series(dashboard) == series
