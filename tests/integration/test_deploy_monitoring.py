"""Grafana dashboard, Prometheus scrape config and alert rules checked against the code.

Every ``newsletter_*`` series a panel or an alert queries must be one the code defines (found by
reading the ``Counter``/``Gauge``/``Histogram`` calls in shared/, services/ and newsletter_cli/),
and every label it groups or filters by must be one of that metric's labels.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "newsletter.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
_KINDS = {"Counter", "Gauge", "Histogram", "Summary"}
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("_sum", "_count", "_created"),
}
_SERIES = re.compile(r"\b(newsletter_[a-z0-9_]+)\b")


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    labels: tuple[str, ...]
    where: str

    def series(self) -> set[str]:
        base = self.name.removesuffix("_total") if self.kind == "Counter" else self.name
        return {base + suffix for suffix in _SUFFIXES[self.kind]}


def _metrics_in(path: Path) -> Iterator[Metric]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if kind not in _KINDS or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        labels: tuple[str, ...] = ()
        label_node = node.args[2] if len(node.args) > 2 else None
        for kw in node.keywords:
            if kw.arg == "labelnames":
                label_node = kw.value
        if isinstance(label_node, ast.List | ast.Tuple):
            labels = tuple(str(e.value) for e in label_node.elts if isinstance(e, ast.Constant))
        yield Metric(first.value, str(kind), labels, str(path.relative_to(ROOT)))


def defined_metrics() -> dict[str, Metric]:
    found: dict[str, Metric] = {}
    for package in ("shared", "services", "newsletter_cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for metric in _metrics_in(path):
                for series in metric.series():
                    found[series] = metric
    return found


def dashboard_expressions() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _check_expression(where: str, expr: str, metrics: dict[str, Metric]) -> list[str]:
    """Parse the PromQL (promql-parser), then check every selector and aggregation."""
    # Grafana replaces $variables before Prometheus sees the query.
    try:
        tree = promql_parser.parse(expr.replace("$language", ".*"))
    except ValueError as err:
        return [f"{where}: not valid PromQL ({err}): {expr}"]
    problems: list[str] = []
    selectors: list[promql_parser.VectorSelector] = []
    groupings: list[list[str]] = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            groupings.append(list(node.modifier.labels))
        return True

    promql_parser.walk(tree, visit)
    if not any((s.name or "").startswith("newsletter_") for s in selectors):
        problems.append(f"{where}: queries no newsletter_* series: {expr}")
    known: list[Metric] = []
    for selector in selectors:
        name = selector.name or ""
        if not name.startswith("newsletter_"):
            continue
        metric = metrics.get(name)
        if metric is None:
            problems.append(f"{where}: {name} is not defined by the code")
            continue
        known.append(metric)
        allowed = set(metric.labels) | ({"le"} if name.endswith("_bucket") else set())
        for matcher in selector.matchers.matchers:
            if matcher.name not in allowed:
                problems.append(f"{where}: {name} has no label {matcher.name!r} ({metric.where})")
    label_names = {label for m in known for label in m.labels} | {"le", "job", "instance"}
    for labels in groupings:
        for label in labels:
            if label not in label_names:
                problems.append(f"{where}: groups by {label!r}, which no queried metric has")
    return problems


def test_the_checker_catches_mistakes() -> None:
    metrics = {"newsletter_x_total": Metric("newsletter_x_total", "Counter", ("language",), "here")}
    assert (
        _check_expression("ok", "sum by (language) (rate(newsletter_x_total[5m]))", metrics) == []
    )
    assert _check_expression("typo", "rate(newsletter_y_total[5m])", metrics)
    assert _check_expression("label", 'newsletter_x_total{domain="a"}', metrics)
    assert _check_expression("group", "sum by (domain) (newsletter_x_total)", metrics)
    assert _check_expression("syntax", "sum by (language (newsletter_x_total)", metrics)


def test_code_defines_metrics_to_chart() -> None:
    metrics = defined_metrics()
    assert "newsletter_queue_messages" in metrics, (
        "services/subscription/ops/queue_metrics.py defines the queue gauge"
    )
    assert metrics["newsletter_queue_messages"].labels == ("queue", "state")


def test_every_dashboard_query_uses_metrics_and_labels_the_code_defines() -> None:
    metrics = defined_metrics()
    problems = [
        problem
        for title, expr in dashboard_expressions()
        for problem in _check_expression(f"panel {title!r}", expr, metrics)
    ]
    assert not problems, "\n".join(problems)


def test_every_alert_uses_metrics_and_labels_the_code_defines() -> None:
    metrics = defined_metrics()
    problems = [
        problem
        for alert, expr in alert_expressions()
        for problem in _check_expression(f"alert {alert}", expr, metrics)
    ]
    assert not problems, "\n".join(problems)


def test_dashboard_is_provisionable_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] == "newsletter-suite"
    assert board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text(encoding="utf-8")
    )["datasources"][0]
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < 24, panel["title"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the dashboard"
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/newsletter.yaml").read_text(encoding="utf-8")
    )["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# The metrics the working agreement names: each is defined by the code and on the dashboard.
AGREED_METRICS = (
    "newsletter_deliveries_total",
    "newsletter_smtp_transaction_seconds",
    "newsletter_planned_deliveries_total",
    "newsletter_publish_confirms_total",
    "newsletter_render_seconds",
    "newsletter_signups_total",
    "newsletter_confirmations_total",
    "newsletter_unsubscribes_total",
    "newsletter_bounces_total",
    "newsletter_complaints_total",
    "newsletter_queue_messages",
    "newsletter_queue_consumers",
)


def test_every_agreed_metric_is_defined_and_charted() -> None:
    metrics = defined_metrics()
    defined = {m.name for m in metrics.values()}
    assert not set(AGREED_METRICS) - defined, "renamed or missing in the code"
    charted = {
        metrics[name].name
        for _, expr in dashboard_expressions()
        for name in _SERIES.findall(expr)
        if name in metrics
    }
    assert not set(AGREED_METRICS) - charted, "defined but not on the dashboard"


def test_prometheus_scrapes_every_process_on_its_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) >= {"subscription", "renderer", "dispatcher", "bounces", "rabbitmq"}
    assert jobs["subscription"]["static_configs"][0]["targets"] == ["subscription:8000"]
    assert jobs["renderer"]["static_configs"][0]["targets"] == ["renderer:9101"]
    dispatcher = jobs["dispatcher"]["dns_sd_configs"][0]
    assert dispatcher == {
        "names": ["dispatcher"],
        "type": "A",
        "port": 9102,
        "refresh_interval": "30s",
    }, "every dispatcher replica is found through DNS"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert "static_configs" in job or "dns_sd_configs" in job, job["job_name"]


# Prometheus refuses unknown fields ("field x not found in type config.ScrapeConfig"): a
# subset of its configuration schema, strict where these files use it.
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
_STATIC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["targets"],
    "properties": {
        "targets": {"type": "array", "items": {"type": "string", "pattern": r"^[\w.-]+:\d+$"}},
        "labels": {"type": "object"},
    },
}
_DNS_SD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["names"],
    "properties": {
        "names": {"type": "array", "items": {"type": "string"}},
        "type": {"enum": ["SRV", "A", "AAAA", "MX", "NS"]},
        "port": {"type": "integer"},
        "refresh_interval": _DURATION,
    },
}
PROMETHEUS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "scrape_interval": _DURATION,
                "scrape_timeout": _DURATION,
                "evaluation_interval": _DURATION,
                "external_labels": {"type": "object"},
            },
        },
        "rule_files": {"type": "array", "items": {"type": "string"}},
        "scrape_configs": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["job_name"],
                "properties": {
                    "job_name": {"type": "string"},
                    "metrics_path": {"type": "string", "pattern": "^/"},
                    "scheme": {"enum": ["http", "https"]},
                    "scrape_interval": _DURATION,
                    "scrape_timeout": _DURATION,
                    "static_configs": {"type": "array", "items": _STATIC},
                    "dns_sd_configs": {"type": "array", "items": _DNS_SD},
                },
            },
        },
    },
}
RULES_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string"},
                    "interval": _DURATION,
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["alert", "expr"],
                            "properties": {
                                "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                "expr": {"type": "string"},
                                "for": _DURATION,
                                "keep_firing_for": _DURATION,
                                "labels": {"type": "object"},
                                "annotations": {"type": "object"},
                            },
                        },
                    },
                },
            },
        }
    },
}


@pytest.mark.parametrize(
    ("path", "schema"),
    [(PROMETHEUS, PROMETHEUS_SCHEMA), (ALERTS, RULES_SCHEMA)],
    ids=["prometheus.yml", "alerts.yml"],
)
def test_prometheus_files_have_only_fields_prometheus_knows(
    path: Path, schema: dict[str, object]
) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(document)
    ]
    assert not errors, "\n".join(errors)
    broken = {"scrape_configs": [{"job_name": "x", "static_config": []}]}
    assert list(jsonschema.Draft202012Validator(PROMETHEUS_SCHEMA).iter_errors(broken))
