"""The monitoring files, offline: Prometheus config and rules through promtool (syntax and the
alerts' unit tests), the PrometheusRule equal to the rules file, the Grafana dashboard and its
provisioning, the compose file against the compose spec, and Locust's Kubernetes manifests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "rules.yaml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "densenet.json"
PROMETHEUS_RULE = ROOT / "k8s" / "monitoring" / "prometheusrule.yaml"
BIN = Path(sys.executable).parent


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; make tools)")
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_prometheus_config_and_rules_pass_promtool():
    config = promtool("check", "config", "monitoring/prometheus/prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_every_alert_has_a_unit_test_and_they_pass():
    tests = yaml.safe_load((MONITORING / "prometheus" / "rules_test.yaml").read_text())
    tested = {
        case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
    }
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert alerts and alerts == tested
    result = promtool("test", "rules", "monitoring/prometheus/rules_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_alert_fails_its_unit_test(tmp_path):
    """The unit tests can fail: the 5xx alert with its threshold raised above 10 % does not
    fire for the revision answering 10 % 500s."""
    broken = RULES.read_text().replace(
        "expr: revision:requests_5xx:ratio_rate1m > 0.01",
        "expr: revision:requests_5xx:ratio_rate1m > 0.5",
    )
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    shutil.copy(MONITORING / "prometheus" / "rules_test.yaml", tmp_path)
    result = promtool("test", "rules", str(tmp_path / "rules_test.yaml"))
    assert result.returncode != 0 and "DensenetHigh5xxRatio" in result.stdout + result.stderr


def test_the_prometheus_rule_for_the_operator_carries_the_same_groups():
    doc = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert doc["kind"] == "PrometheusRule"
    assert doc["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_pod_monitor_gives_every_series_a_revision_label():
    doc = yaml.safe_load((ROOT / "k8s" / "monitoring" / "podmonitor.yaml").read_text())
    for endpoint in doc["spec"]["podMetricsEndpoints"]:
        targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint.get("relabelings", [])}
        assert targets["revision"] == ["__meta_kubernetes_pod_label_serving_knative_dev_revision"]
        assert targets["pod"] == ["__meta_kubernetes_pod_name"]


def test_the_dashboard_parses_and_every_panel_queries_through_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["revision"]["multi"] and variables["revision"]["includeAll"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert "$revision" in target["expr"], (panel["title"], target["expr"])
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in (
        "requests/s",
        "status",
        "p95",
        "queue",
        "engine call",
        "model served",
        "time to ready",
        "cpu",
        "rss",
        "queue-proxy",
    ):
        assert topic in titles, topic
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "densenet.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_file_follows_the_compose_spec_and_pins_its_images():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert {
        "densenet",
        "prometheus",
        "grafana",
        "tensorboard",
        "locust-master",
        "locust-worker",
    } <= set(services)
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1]
        assert (":" in image and tag != "latest" and tag[0].isdigit()) or tag.startswith("v"), name
        for volume in service.get("volumes", []):
            if not isinstance(volume, str):  # long syntax (tmpfs) names no host path
                continue
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_locust_on_kubernetes_renders_and_validates(tmp_path):
    rendered = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", "loadtest/k8s"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert rendered.returncode == 0, rendered.stderr
    path = tmp_path / "locust.yaml"
    path.write_text(rendered.stdout)
    docs = list(yaml.safe_load_all(rendered.stdout))
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "Deployment/locust-master",
        "Deployment/locust-worker",
        "Service/locust-master",
    ]
    worker = next(d for d in docs if d["metadata"]["name"] == "locust-worker")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--master-host") + 1] == "locust-master"
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
