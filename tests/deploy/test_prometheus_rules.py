"""deploy/prometheus: the rules pass `promtool check` and their unit tests, every alert is unit-tested firing, and
every series they read exists, with the labels they match on, on the /metrics of a live test server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from conftest import market_windows, window_to_payload
from prometheus_client.parser import text_string_to_metric_families

from runtime.constants import INPUT_NAME, MODEL_NAME

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_FILES = [RULES / "recording-rules.yml", RULES / "alert-rules.yml"]
UNIT_TESTS = RULES / "rules-test.yml"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "needs promtool (scripts/test.sh installs it: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)
    return path


def _rules() -> list[dict[str, Any]]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", UNIT_TESTS.name], cwd=RULES, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_and_triton_name_is_unit_tested() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]
    }  # shown firing, with its labels and annotations
    silent = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if not case["exp_alerts"]}
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts and alerts == fired and alerts == silent
    checked = {case["expr"] for t in tests for case in t.get("promql_expr_test", [])}
    triton = {rule["record"] for rule in _rules() if rule.get("record", "").startswith("nv_")}
    assert triton <= checked, triton - checked


# -- the series the rules read exist on /metrics ------------------------------------------------------------------
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])")


def referenced(expr: str) -> dict[str, list[tuple[str, str, str]]]:
    """PromQL series names in `expr` with their label matchers (functions, keywords and label lists left out)."""
    found: dict[str, list[tuple[str, str, str]]] = {}

    def selector(m: re.Match[str]) -> str:
        name = m.group(1)
        if name:
            found.setdefault(name, []).extend(_MATCHER.findall(m.group(2)))
        return " "

    rest = _SELECTOR.sub(selector, expr)
    rest = _LABEL_LIST.sub(" ", rest)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)  # string arguments (label_replace)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)  # range durations
    for m in _IDENT.finditer(rest):
        name = m.group(1)
        if name.lower() in _KEYWORDS or rest[m.end() :].lstrip().startswith("("):
            continue
        found.setdefault(name, [])
    return found


def test_the_expression_parser() -> None:
    got = referenced(
        'sum by (job, le) (rate(a_bucket{route="/x", status=~"5.."}[5m])) / 1e6 * on (instance) '
        'group_left (model) label_replace(b:c, "model", "$1", "name", "(.+)") and d > bool 0.5'
    )
    assert got == {"a_bucket": [("route", "=", "/x"), ("status", "=~", "5..")], "b:c": [], "d": []}


@pytest.fixture(scope="module")
def live_metrics(committed_model_dir: Path) -> dict[str, dict[str, Any]]:
    """Family name -> {"type", "samples": [(sample name, labels)]} after traffic on every inference route."""
    from starlette.testclient import TestClient

    from runtime.http.app import create_app
    from runtime.settings import Settings

    # Three requests' worth of tokens: the fourth is refused, so edge_rejected_total has a sample.
    settings = Settings(
        model_dir=committed_model_dir, intra_op_threads=1, drift_sample_rate=1.0, rate_limit=0.001, rate_limit_burst=3
    )
    with TestClient(create_app(settings)) as client:
        window = market_windows(1, seed=3)[0]
        assert client.post("/predict", content=json.dumps(window_to_payload(window)), headers=JSON).status_code == 200
        batch = {"requests": [window_to_payload(window)] * 2}
        assert client.post("/predict/batch", content=json.dumps(batch), headers=JSON).status_code == 200
        tensor = {"name": INPUT_NAME, "shape": [1, 60, 5], "datatype": "FP32", "data": window.ravel().tolist()}
        v2 = client.post(f"/v2/models/{MODEL_NAME}/infer", content=json.dumps({"inputs": [tensor]}), headers=JSON)
        assert v2.status_code == 200
        assert client.post("/predict", content=b"{}", headers=JSON).status_code == 429
        text = client.get("/metrics").text
    families: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {"type": family.type, "samples": [(s.name, s.labels) for s in family.samples]}
    return families


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}


def _family(name: str, families: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    for family_name, family in families.items():
        if any(name == family_name + suffix for suffix in _SUFFIXES.get(family["type"], ("",))):
            return family
    return None


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.get("record") or r["alert"]) for r in _rules()])
def test_rule_reads_only_live_series(rule: dict[str, Any], live_metrics: dict[str, dict[str, Any]]) -> None:
    recorded = {r["record"] for r in _rules() if "record" in r}
    for name, matchers in referenced(rule["expr"]).items():
        if ":" in name:  # a recording rule's output: it must be one of ours
            assert name in recorded, f"{name} is recorded by no rule"
            continue
        family = _family(name, live_metrics)
        assert family is not None, f"{name} is not on /metrics (families: {sorted(live_metrics)})"
        samples = [labels for sample, labels in family["samples"] if sample == name]
        if not samples:
            continue  # a labelled family with no child yet (edge_model_reloads_total before a reload)
        for label, op, value in matchers:
            assert all(label in labels for labels in samples), f"{name} has no label {label!r}"
            if op in ("=", "=~"):
                pattern = re.escape(value) if op == "=" else value
                live = {labels[label] for labels in samples}
                assert any(re.fullmatch(pattern, v) for v in live) or label in ("status", "reason", "outcome"), (
                    f'{name}{{{label}{op}"{value}"}} matches none of {sorted(live)}'
                )
