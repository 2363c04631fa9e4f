"""The alert rules and the dashboard pass promtool and use only exported metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fakes.openai import FakeOpenAI
from penin.api.app import create_app
from penin.config import load_settings
from penin.keys import Scope
from penin.observability.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "monitoring" / "alerts.yaml"
ALERTS_TEST = ROOT / "deploy" / "monitoring" / "alerts_test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "penin.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK = ROOT / "docs" / "operations.md"
PROMTOOL_TIMEOUT = 60
PROVIDER_KEY_ENV = "FAKE_PROVIDER_KEY"
os.environ.setdefault(PROVIDER_KEY_ENV, "test-provider-key")

# The deployment guide's alerts: expression, duration and severity are its contract.
GUIDE_ALERTS = {
    "PrimaryNodeDown": ('up{job="penin-primary"} == 0', "1m", "critical"),
    "WormReplicationLag": ("worm_replication_lag_seconds > 60", "2m", "warning"),
    "HighErrorRate": ("rate(penin_errors_total[5m]) > 0.1", "3m", "warning"),
}
# Recorded by Prometheus itself for every scrape target.
PROMETHEUS_OWN = {"up"}
# Declared by every node; samples exist only on members of a cluster (the lag
# only where replicas are).
DECLARED_ONLY = {"worm_replication_lag_seconds": "gauge", "penin_ha_role": "gauge"}
# What prometheus_client's ProcessCollector exports on Linux, by type.
PROCESS_METRICS = {
    "penin_process_cpu_seconds_total": "counter",
    "penin_process_max_fds": "gauge",
    "penin_process_open_fds": "gauge",
    "penin_process_resident_memory_bytes": "gauge",
    "penin_process_start_time_seconds": "gauge",
    "penin_process_virtual_memory_bytes": "gauge",
}
# Routes that answer 200, and /replica, which answers 503 on a single node and so
# puts a sample in penin_errors_total.
ROUTES = ("/livez", "/health", "/readyz", "/primary", "/replica")

# -- reading PromQL ------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_NUMBER = re.compile(r"(?<![\w:.])(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w:])", re.I)
# An identifier not followed by "(" (which would make it a function call).
_IDENTIFIER = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "group",
    "topk", "bottomk", "quantile", "count_values",
}  # fmt: skip
_GRAFANA_INTERVAL = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
_LABEL_VALUES = re.compile(r"label_values\((.+),\s*\w+\s*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING, _OFFSET, _NUMBER):
        text = pattern.sub(" ", text)

    return set(_IDENTIFIER.findall(text)) - _KEYWORDS


def as_promql(grafana_expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by plain values."""
    text = _GRAFANA_INTERVAL.sub("5m", grafana_expr)

    return _GRAFANA_VARIABLE.sub(".*", text)


# -- the files -----------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]

    return [rule for group in groups for rule in group["rules"]]


def alert_exprs() -> list[str]:
    return [rule["expr"] for rule in alert_rules()]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def dashboard_panels() -> list[dict[str, Any]]:
    return list(_panels(dashboard()["panels"]))


def dashboard_exprs() -> list[str]:
    """Every panel query, and the metric queries of the template variables."""
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable["type"] == "query" and (found := _LABEL_VALUES.search(query)):
            exprs.append(found[1])

    return exprs


# -- promtool ------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; skip when it is missing, except in CI, where that fails."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is missing: `make system-deps` installs Debian's prometheus"
        if "CI" in os.environ:
            pytest.fail(reason)
        pytest.skip(reason)

    return subprocess.run(
        [path, *args],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )


def test_promtool_accepts_the_alert_rules() -> None:
    checked = promtool("check", "rules", str(ALERTS))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    tested = promtool("test", "rules", str(ALERTS_TEST))

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"penin_dashboard:query_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))

    checked = promtool("check", "rules", str(rule_file))

    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the alerts ------------------------------------------------------------------


def test_the_guides_alerts_keep_their_names_expressions_and_durations() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}

    for name, (expr, duration, severity) in GUIDE_ALERTS.items():
        assert rules[name]["expr"].strip() == expr, name
        assert rules[name]["for"] == duration, name
        assert rules[name]["labels"]["severity"] == severity, name


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]

    for rule in alert_rules():
        outcomes = {
            bool(c["exp_alerts"]) for c in cases if c["alertname"] == rule["alert"]
        }
        assert outcomes == {True, False}, rule["alert"]


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())

    return text.replace(" ", "-")


def test_every_alert_says_what_to_do_and_links_to_its_runbook_section() -> None:
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {_anchor(heading) for heading in headings}

    for rule in alert_rules():
        annotations = rule["annotations"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        assert ROOT / page == RUNBOOK, rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, rule["alert"]


# -- the dashboard -------------------------------------------------------------


def test_the_dashboard_keeps_the_guides_panels() -> None:
    panels = {panel["title"]: panel for panel in dashboard_panels()}

    assert panels["Node Status"]["type"] == "stat"
    assert panels["Node Status"]["targets"][0]["expr"] == 'up{job=~"penin-.*"}'
    assert panels["WORM Replication Lag"]["type"] == "timeseries"
    lag = panels["WORM Replication Lag"]["targets"][0]["expr"]
    assert lag == "worm_replication_lag_seconds"


def test_every_dashboard_query_uses_the_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    selected = {"type": "prometheus", "uid": "${datasource}"}

    assert board["schemaVersion"] >= 39
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == selected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == selected, panel["title"]


# -- the metrics -----------------------------------------------------------------


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What GET /metrics answers on a node that has served a few requests,
    routed a chat request twice (the second from the cache), streamed one,
    and failed to evaluate a policy path that names nothing."""
    with FakeOpenAI() as upstream:
        settings = load_settings(
            overrides={
                "data_dir": tmp_path_factory.mktemp("data"),
                "server": {"open_metrics": True, "open_health": True},
                **_router_config(upstream),
            }
        )
        with TestClient(create_app(settings)) as client:
            for route in ROUTES:
                client.get(route)
            _route_chats(client)
            _fail_a_policy(client)
            response = client.get("/metrics")

    assert response.status_code == 200

    return response.text


def _router_config(upstream: FakeOpenAI) -> dict[str, Any]:
    provider = {
        "name": "fake",
        "kind": "openai",
        "base_url": upstream.base_url + "/v1",
        "api_key_env": PROVIDER_KEY_ENV,
    }
    deployment = {"provider": "fake", "model": "gpt-4o-mini"}

    return {
        "providers": [provider],
        "models": [{"name": "fast", "deployments": [deployment]}],
        "budget": {"daily_usd": 10.0},
    }


def _route_chats(client: TestClient) -> None:
    token, _ = client.app.state.node.keyring.create(Scope.ROUTE)  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {token}"}
    chat = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    for body in (chat, chat, {**chat, "stream": True}):
        response = client.post("/v1/chat/completions", json=body, headers=auth)
        assert response.status_code == 200, response.text


def _fail_a_policy(client: TestClient) -> None:
    token, _ = client.app.state.node.keyring.create(Scope.ADMIN)  # type: ignore[attr-defined]
    response = client.post(
        "/v1/policy/penin/nothing/here",
        json={"input": {}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["reason"] == "no_result"


def exported(exposition: str) -> set[str]:
    """Names a query can select: every sample's, and the declared-only gauges."""
    families = list(text_string_to_metric_families(exposition))
    declared = {family.name: family.type for family in families}
    names = {sample.name for family in families for sample in family.samples}
    for name, kind in DECLARED_ONLY.items():
        assert declared.get(name) == kind, f"/metrics does not declare {name}"
        names.add(name)

    return names


@pytest.mark.parametrize(
    "exprs", [alert_exprs, dashboard_exprs], ids=["alerts", "dashboard"]
)
def test_alerts_and_dashboard_use_only_metrics_the_node_exports(
    exprs: Callable[[], list[str]], exposition: str
) -> None:
    used = set().union(*(metric_names(expr) for expr in exprs()))

    unknown = used - exported(exposition) - PROMETHEUS_OWN

    assert len(used) > 5
    assert not unknown, "these metrics are not exported by the node"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job=~"penin-.*"} == 0', {"up"}),
        ("rate(penin_errors_total[5m]) > 0.1", {"penin_errors_total"}),
        ("a offset 6m and on(instance) b:rate5m", {"a", "b:rate5m"}),
        (
            'histogram_quantile(0.99, sum by (le, r) (rate(x_bucket{r="sum"}[1m])))',
            {"x_bucket"},
        ),
        ("sum(rate(c_total[5m])) by (job) / ignoring(le) d > 1e3", {"c_total", "d"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_metrics_doc_lists_exactly_the_registrys_metrics() -> None:
    rows = re.findall(
        r"^\| `([\w:]+)` \| (\w+) \|", METRICS_DOC.read_text(), flags=re.MULTILINE
    )
    documented = dict(rows)
    defined = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in REGISTRY.collect()
    }

    assert len(rows) == len(documented), "a metric is listed twice"
    assert documented == {**PROCESS_METRICS, **defined}
