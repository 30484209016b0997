"""The Grafana dashboard and the alert rules read only what the daemons really export, and use what they declare.

The exported names come from scraping every daemon kind (file, process, vanilla, combo and
a manager leading a converged group), each a real process on its Unix socket.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.runtime.conftest import REPO
from tests.runtime.observability.promql import SYNTHETIC, exposed_names, metric_names
from tests.runtime.observability.test_daemon_metrics import scrape_unix

DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
ALERTS = REPO / "docs" / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts.test.yml")
# Variables Grafana defines itself.
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
                    "__dashboard", "__from", "__to", "__name"}


def _expressions(node) -> list[str]:
    """Every PromQL expression in a dashboard: panel targets and query variables."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        query = node.get("query")
        if isinstance(query, dict) and isinstance(query.get("query"), str):
            found.append(query["query"])
        return found + [e for v in node.values() for e in _expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in _expressions(v)]
    return []


def _variable_query_names(expr: str) -> set[str]:
    """``label_values(metric, label)`` reads ``metric``; plain expressions go through ``metric_names``."""
    found = re.fullmatch(r"\s*label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)\s*", expr)
    return metric_names(found.group(1)) if found else metric_names(expr)


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """The union of what every daemon kind exports, with a group converged so its gauges are present."""
    from tests.runtime.conftest import Daemons
    from tests.runtime.observability.conftest import ObservedStack

    daemons = Daemons(tmp_path_factory.mktemp("exported") / "home")
    stack = None
    try:
        stack = ObservedStack(daemons)
        daemons.start("file")
        daemons.start("combo")
        stack.commit(stack.spec(size=1))
        stack.wait_converged(1)
        names: set[str] = set()
        for name in ("group", "process", "vanilla", "file", "combo"):
            names |= exposed_names(scrape_unix(daemons.plugins_dir / name))
        return names
    finally:
        daemons.stop_all()
        if stack is not None:
            stack.kill_instances()


def test_the_metric_name_reader_handles_our_kinds_of_expression():
    assert metric_names('sum by (le, group) (rate(infrakit_reconcile_duration_seconds_bucket{group=~"$group"}'
                        '[$__rate_interval]))') == {"infrakit_reconcile_duration_seconds_bucket"}
    assert metric_names("up == 0 and on (job, instance) last_over_time(infrakit_build_info[1h])") == \
        {"up", "infrakit_build_info"}
    assert metric_names('process_resident_memory_bytes * on (job, instance) group_left (version) '
                        'infrakit_build_info{version!="x"} > bool 1e3') == \
        {"process_resident_memory_bytes", "infrakit_build_info"}
    assert metric_names("a offset 5m > ignoring (x) b") == {"a", "b"}
    assert _variable_query_names("label_values(infrakit_group_desired_instances, group)") == \
        {"infrakit_group_desired_instances"}


def test_every_declared_dashboard_input_and_variable_is_used_and_every_reference_declared():
    text = DASHBOARD.read_text()
    dashboard = json.loads(text)
    inputs = {i["name"] for i in dashboard.get("__inputs", [])}
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    referenced = set(re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", text))
    referenced_names = {a or b for a, b in referenced}
    unused = sorted((inputs | variables) - referenced_names)
    assert not unused, f"the dashboard declares inputs or variables it never uses: {unused}"
    undeclared = sorted(referenced_names - inputs - variables - GRAFANA_BUILTINS)
    assert not undeclared, f"the dashboard refers to undeclared variables: {undeclared}"


def test_the_dashboard_queries_only_metrics_the_daemons_export(exported: set[str]):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _expressions(dashboard)
    assert len(exprs) >= 8, "the dashboard should show groups, reconcile latency, replacements and leadership"
    used: set[str] = set()
    for expr in exprs:
        names = _variable_query_names(expr)
        assert names, f"no metric in the dashboard expression {expr!r}"
        used |= names
    unknown = sorted(used - exported)
    assert not unknown, f"the dashboard queries metrics no daemon exports: {unknown}"
    for needed in ("infrakit_group_healthy_instances", "infrakit_reconcile_duration_seconds_bucket",
                   "infrakit_instances_destroyed_total", "infrakit_manager_leader",
                   "infrakit_rpc_server_duration_seconds_count", "infrakit_rpc_server_duration_seconds_bucket",
                   "process_resident_memory_bytes", "process_cpu_seconds_total", "infrakit_build_info"):
        assert needed in used, f"the dashboard does not show {needed}"


def test_the_alert_rules_read_only_metrics_the_daemons_export(exported: set[str]):
    rules = _alert_rules()
    assert rules
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric in {rule['expr']!r}"
        unknown = sorted(names - exported - SYNTHETIC)
        assert not unknown, f"{rule['alert']} reads metrics no daemon exports: {unknown}"


def test_every_alert_is_explained_and_unit_tested_both_firing_and_quiet():
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in rules:
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule["alert"]
        notes = rule.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), f"{rule['alert']} needs a summary and a description"
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert [str((ALERT_TESTS.parent / f).resolve()) for f in tests["rule_files"]] == [str(ALERTS.resolve())]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(names) - firing == set(), f"alerts never seen firing in {ALERT_TESTS.name}: {sorted(set(names) - firing)}"
    assert set(names) - quiet == set(), f"alerts never checked quiet in {ALERT_TESTS.name}: {sorted(set(names) - quiet)}"
    assert firing | quiet <= set(names), f"tests for unknown alerts: {sorted((firing | quiet) - set(names))}"
