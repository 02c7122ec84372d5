"""The rules and the dashboard against a real server: every metric they read is one the
service exports, and a real Prometheus scraping a real server process evaluates the recording
rules to data and every rule without error."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import promql_parser
import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.bench.server import free_port
from tests.support import ROOT, encode

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
RULES = ROOT / "monitoring" / "prometheus" / "rules.yaml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "densenet.json"
# queue-proxy's metrics (Knative 1.19+): scraped from the same pods, not exported by this app.
KNATIVE_PREFIX = "kn_"


PNG = encode(Image.linear_gradient("L").resize((64, 64)))


@pytest.fixture(scope="module")
def server(build, serve):
    """A real server that has answered one /predict and one /v2 request."""
    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/predict", files={"file": ("x.png", PNG)}).status_code == 200
        tensor = {"name": "image", "datatype": "BYTES", "shape": [1]}
        body = {"inputs": [{**tensor, "data": [base64.b64encode(PNG).decode()]}]}
        assert client.post("/v2/models/densenet/infer", json=body).status_code == 200
    return server


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        target["expr"].replace("$__rate_interval", "1m").replace("$revision", ".*")
        for panel in panels
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_every_metric_the_rules_and_dashboard_read_is_exported(server):
    exported = {
        sample.name
        for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        for sample in family.samples
    }
    used = set().union(*(metric_names(e) for e in rule_expressions() + dashboard_expressions()))
    app_metrics = {n for n in used - recorded_names() if not n.startswith(KNATIVE_PREFIX)}
    assert len(app_metrics) >= 15
    assert app_metrics - exported == set()
    # The parser finds names: a misspelt one would be reported above.
    assert metric_names('rate(requets_total{a="b"}[1m])') == {"requets_total"}


def test_a_real_prometheus_evaluates_the_rules_on_a_real_server(server, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus; make tools)")
    # The same rules, evaluated every second instead of every 30 s so the test is quick.
    (tmp_path / "rules.yaml").write_text(
        re.sub(r"interval: 30s", "interval: 1s", RULES.read_text())
    )
    target = server.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "densenet",
                "static_configs": [{"targets": [target], "labels": {"revision": "test-00001"}}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    wanted = [
        "revision:requests:rate1m",
        "revision:images:rate1m",
        "revision:request_duration_seconds:p95_5m",
        "revision:request_predict_seconds:p50_5m",
        "revision:request_preprocess_seconds:p99_5m",
        "revision:queue_depth:max",
        "revision:inference_batch_size:mean_rate1m",
    ]
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 60
            found: dict[str, list] = {}
            while time.monotonic() < deadline and len(found) < len(wanted):
                client.get("/healthz")
                client.post("/predict", files={"file": ("x.png", PNG)})
                time.sleep(1)
                for name in wanted:
                    try:
                        result = httpx.get(f"{api}/query", params={"query": name}).json()
                    except httpx.TransportError:
                        break
                    if result.get("data", {}).get("result"):
                        found[name] = result["data"]["result"]
        assert set(found) == set(wanted), Path(log.name).read_text()[-2000:]
        assert all(r["metric"]["revision"] == "test-00001" for rs in found.values() for r in rs)
        rules = httpx.get(f"{api}/rules").json()["data"]["groups"]
        unhealthy = [
            (r.get("name"), r.get("lastError"))
            for g in rules
            for r in g["rules"]
            if r.get("health") != "ok"
        ]
        assert unhealthy == []
        assert sum(len(g["rules"]) for g in rules) == len(rule_expressions())
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
