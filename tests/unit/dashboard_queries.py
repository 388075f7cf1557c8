"""The Grafana dashboard's PromQL, taken apart: every query, the metric names each one reads, and the metric names an
agent exposes. Shared by the dashboard's unit test (an in-process registry) and its integration test (a running
agent's /metrics)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "helm" / "rollback-agent" / "dashboards" / "rollback-agent.json"

# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "$model": ".*",
    "$instance": ".*",
    "$rule": ".*",
}
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>[a-zA-Z_]\w*)\)$")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
    | {"inf", "nan", "atan2"}
)
# Where label names rather than metric names appear: matchers, grouping clauses, ranges, strings.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def substituted(expr: str) -> str:
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    return expr


def _walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        title = node.get("title") or node.get("name") or ""
        here = f"{where}/{title}" if title else where
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield here, value
            else:
                yield from _walk(value, here)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, where)


def queries() -> list[tuple[str, str]]:
    """(where in the dashboard, PromQL with Grafana's variables substituted): panel targets, annotations, and the
    selectors of the template variables' label_values()."""
    found = [(where, substituted(expr)) for where, expr in _walk(dashboard(), "")]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(query.strip())
        assert match, f"variable {variable['name']}: only label_values(selector, label) queries are supported"
        if match["selector"]:
            found.append((f"variable {variable['name']}", substituted(match["selector"])))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (the expression is assumed valid: promtool checks it)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    previous = None
    while previous != text:
        previous, text = text, _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


def exposed_names(exposition: str) -> set[str]:
    """Every series name a /metrics text yields, including those of families with no sample yet (a histogram
    without observations still exposes _bucket, _count and _sum once it has one)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum", ""),
        "info": ("_info",),
        "gauge": ("",),
        "unknown": ("",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def documented_names(metrics_md: str) -> set[str]:
    """The metric names in the first column of docs/metrics.md's tables."""
    return {
        name
        for line in metrics_md.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`([a-zA-Z_:][\w:]*)`", line.split("|")[1])
    }


def base_name(series: str) -> str:
    """A histogram's or summary's series name -> the family name the docs list."""
    return re.sub(r"_(bucket|count|sum)$", "", series)
