"""What a Grafana dashboard asks Prometheus for, and whether a scrape has it.

A panel whose query names a metric or a label that is never exported shows "No data" and nothing
else, so a renamed metric or a dropped label goes unnoticed. This reads the queries of a dashboard
(its panels' targets and its template variables), collects for each of our metrics the label
names the queries use with it, and compares them with the series of a Prometheus text scrape.

It reads just enough PromQL for the dashboard's own queries: `{label=...}` matchers right after a
metric, `by (...)`/`without (...)` of an aggregation around it, and Grafana's
`label_values(metric, label)`. `$`-variables and Grafana macros are ignored.
"""

from __future__ import annotations

import re

__all__ = ["missing_from_scrape", "queried_series", "scraped_series"]

METRIC = re.compile(r"(?<![A-Za-z0-9_:])ray_ohlcv_[a-z_]+(?![A-Za-z0-9_:])")
LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^()]*)\)")
LABEL_VALUES = re.compile(r"label_values\s*\(\s*(ray_ohlcv_[a-z_]+)\s*(?:\{[^{}]*\})?\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
QUANTILE = re.compile(r"\bhistogram_quantile\s*\(")
SAMPLE_LABELS = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"(?:[^"\\]|\\.)*"')


def queried_series(dashboard: dict) -> dict[str, set[str]]:
    """Every `ray_ohlcv_*` metric the dashboard's queries use -> the label names used with it."""
    used: dict[str, set[str]] = {}
    for expr in _expressions(dashboard):
        for metric, labels in _series_of(expr).items():
            used.setdefault(metric, set()).update(labels)
    return used


def scraped_series(scrape_text: str) -> dict[str, set[str]]:
    """Metric name -> the label names its series carry, from Prometheus text exposition."""
    series: dict[str, set[str]] = {}
    for line in scrape_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = LABEL.match(line)
        if not name:
            continue
        rest = line[name.end():].lstrip()
        labels = set()
        if rest.startswith("{"):
            labels = set(SAMPLE_LABELS.findall(rest[:_closing(_blank_strings(rest), 0)]))
        series.setdefault(name.group(), set()).update(labels)
    return series


def missing_from_scrape(dashboard: dict, scrape_text: str) -> list[str]:
    """One line for each queried metric without series, and each queried label no series carries."""
    scraped = scraped_series(scrape_text)
    missing = []
    for metric, labels in sorted(queried_series(dashboard).items()):
        if metric not in scraped:
            missing.append(f"{metric}: no series in the scrape")
            continue
        missing += [f"{metric}: no series has the label {label}" for label in sorted(labels - scraped[metric])]
    return missing


def _expressions(dashboard: dict):
    """The PromQL of every panel target (rows' collapsed panels too) and template variable."""
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels += panel.get("panels", [])
        yield from (target["expr"] for target in panel.get("targets", []) if target.get("expr"))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        # Grafana stores a variable's query as a string or, since 9.x, as {"query": ...}.
        query = query.get("query") if isinstance(query, dict) else query
        if isinstance(query, str) and query:
            yield query


def _series_of(expr: str) -> dict[str, set[str]]:
    text = _blank_strings(expr)
    groupings = [(_argument_of(text, g), _names(g.group(1).split(","))) for g in GROUPING.finditer(text)]
    quantiles = [(q.end() - 1, _closing(text, q.end() - 1) + 1) for q in QUANTILE.finditer(text)]
    series: dict[str, set[str]] = {}
    for metric in METRIC.finditer(text):
        labels = series.setdefault(metric.group(), set())
        labels |= _matcher_labels(text, metric.end())
        # An aggregation's `by`/`without` names labels of every series inside its argument.
        labels.update(*(grouped for (start, end), grouped in groupings if start <= metric.start() < end))
        # histogram_quantile reads the buckets' `le` whether or not a `by` names it.
        if metric.group().endswith("_bucket") and any(start <= metric.start() < end for start, end in quantiles):
            labels.add("le")
    for metric, label in LABEL_VALUES.findall(text):
        series.setdefault(metric, set()).add(label)
    return series


def _blank_strings(expr: str) -> str:
    """The expression with every string literal's content blanked and its offsets kept: a brace,
    a comma or a metric-like word inside a label value or a regex is not PromQL structure."""
    return STRING.sub(lambda m: m.group()[0] + " " * (len(m.group()) - 2) + m.group()[-1], expr)


def _matcher_labels(text: str, end: int) -> set[str]:
    """Label names of the `{...}` selector right after a metric name ending at `end`."""
    start = len(text) - len(text[end:].lstrip())
    if not text.startswith("{", start):
        return set()
    inside = text[start + 1:_closing(text, start)]
    return _names(re.split(r"[=!~]", matcher, maxsplit=1)[0] for matcher in inside.split(","))


def _argument_of(text: str, grouping: re.Match) -> tuple[int, int]:
    """Offsets of the aggregation argument a `by (...)` clause belongs to: the parenthesised
    expression after it (`sum by (l) (x)`) or, failing that, the one before it (`sum (x) by (l)`)."""
    after = len(text) - len(text[grouping.end():].lstrip())
    if text.startswith("(", after):
        return after, _closing(text, after) + 1
    before = len(text[:grouping.start()].rstrip()) - 1
    if before >= 0 and text[before] == ")":
        return _opening(text, before), before + 1
    return 0, 0


def _names(candidates) -> set[str]:
    """The plain label names among `candidates` (a `$`-variable or a macro is none)."""
    return {name.strip() for name in candidates if LABEL.fullmatch(name.strip())}


def _closing(text: str, start: int) -> int:
    """Offset of the bracket closing the one at `start` (the end of the text if none does)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    depth = 0
    for offset in range(start, len(text)):
        if text[offset] == text[start]:
            depth += 1
        elif text[offset] == pairs[text[start]]:
            depth -= 1
            if depth == 0:
                return offset
    return len(text)


def _opening(text: str, end: int) -> int:
    """Offset of the `(` that the `)` at `end` closes (0 if none does)."""
    depth = 0
    for offset in range(end, -1, -1):
        depth += {")": 1, "(": -1}.get(text[offset], 0)
        if depth == 0:
            return offset
    return 0
