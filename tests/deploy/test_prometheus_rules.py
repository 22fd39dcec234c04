"""deploy/prometheus/alerts.yaml: valid for promtool, its unit tests pass, and every expression uses
only series the service exports (cds_service/record/metrics.py) or Prometheus' own `up`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from cds_service.record.metrics import Metrics
from tests.deploy.helm_render import DEPLOY, PROMTOOL, tool

RULES = DEPLOY / "prometheus" / "alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
PROMETHEUS_SERIES = {"up"}  # written by Prometheus for every scrape target
# PromQL words that look like series names inside an expression.
PROMQL_WORDS = {
    "sum", "rate", "increase", "histogram_quantile", "by", "without", "and", "or", "unless", "on",
    "ignoring", "group_left", "group_right", "bool", "avg", "max", "min", "count", "absent", "le",
}  # fmt: skip
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
_STRINGS = re.compile(r'"[^"]*"')
_DURATIONS = re.compile(r"\[\d+[smhd]\]")


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def exported_series() -> set[str]:
    """Series names in the service's own exposition (counters as _total, histograms as _bucket ...)."""
    metrics = Metrics()
    metrics.observe_request("/cds-services/osteoporosis-escalation", 200, 0.02)
    metrics.record_decision("ESCALATE", "R12")
    metrics.record_fhir_fetch("ok", keys_fetched=2)
    metrics.record_auth_refusal("expired")
    metrics.record_ledger_write_failure()
    metrics.record_feedback("accepted")
    metrics.record_degraded("ledger")
    body, _ = metrics.render()
    return {
        sample.name for family in text_string_to_metric_families(body.decode()) for sample in family.samples
    }


def series_in(expression: str) -> set[str]:
    stripped = _DURATIONS.sub("", _LABEL_MATCHERS.sub("", _STRINGS.sub("", expression)))
    return {word for word in _IDENTIFIER.findall(stripped) if word not in PROMQL_WORDS}


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [str(tool(PROMTOOL)), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_alerts_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    done = subprocess.run(
        [str(tool(PROMTOOL)), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text(encoding="utf-8")))
    assert len(tested) >= 7


def test_every_expression_uses_only_series_the_service_exports() -> None:
    exported = exported_series() | PROMETHEUS_SERIES
    assert "cds_http_requests_total" in exported and "cds_http_request_duration_seconds_bucket" in exported
    for rule in rules():
        used = series_in(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']}: {sorted(used - exported)}"


def test_the_series_check_catches_a_misspelt_metric() -> None:
    assert series_in('sum(rate(cds_http_request_total{endpoint="service"}[5m])) > 0') == {
        "cds_http_request_total"
    }
    assert "cds_http_request_total" not in exported_series()


def test_label_values_in_the_rules_are_values_the_service_uses() -> None:
    from cds_service.record.metrics import AUTH_REASONS, ENDPOINTS, FHIR_FETCH_RESULTS

    allowed = {
        "endpoint": set(ENDPOINTS),
        "result": set(FHIR_FETCH_RESULTS),
        "reason": set(AUTH_REASONS),
    }
    matcher = re.compile(r'(\w+)(=~|=)"([^"]*)"')
    for rule in rules():
        for label, operator, value in matcher.findall(rule["expr"]):
            if label not in allowed:
                continue
            values = value.split("|") if operator == "=~" else [value]
            assert set(values) <= allowed[label], f"{rule['alert']}: {label}={value}"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_rules_file_is_documented() -> None:
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    for rule in rules():
        assert rule["alert"] in operations, f"{rule['alert']} is not described in docs/operations.md"
