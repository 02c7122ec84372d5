"""Deployment files: schemas, Knative's own rules, and consistency with the code.

There is no cluster here, so each Knative Service is checked against the Knative Serving v1
CRD schema (``KNATIVE_SCHEMA``), its pod template against the core Pod schema
(``kubernetes-validate --strict``), skaffold.yaml against its schema (``SKAFFOLD_SCHEMA``), and
both Dockerfiles with hadolint. What a schema cannot see is checked below, rule by rule.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from tests.support import ROOT

BIN = Path(sys.executable).parent
SCHEMAS = ROOT.parent / "shared" / "schemas"
KNATIVE_SCHEMA = Path(os.environ.get("KNATIVE_SCHEMA", SCHEMAS / "knative-service-serving-v1.json"))
SKAFFOLD_SCHEMA = Path(os.environ.get("SKAFFOLD_SCHEMA", SCHEMAS / "skaffold-v4beta14.json"))
KSVC_FILES = sorted((ROOT / "k8s").glob("*.yaml"))
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "Dockerfile.gpu"]
# Ports Knative's queue-proxy and activator use inside the pod.
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091}
KPA, HPA = "kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"
DURATION = re.compile(r"^\d+(\.\d+)?(s|m|h)$")


def _int(lo: int, hi: int | None = None):
    def check(v: str) -> bool:
        return v.isdigit() and int(v) >= lo and (hi is None or int(v) <= hi)

    return check


def _float_pos(v: str) -> bool:
    try:
        return float(v) > 0
    except ValueError:
        return False


# Current (kebab-case) Knative revision annotations and what values they accept.
KNATIVE_ANNOTATIONS = {
    "autoscaling.knative.dev/class": lambda v: v in {KPA, HPA},
    "autoscaling.knative.dev/metric": lambda v: v in {"concurrency", "rps", "cpu", "memory"},
    "autoscaling.knative.dev/target": _float_pos,
    "autoscaling.knative.dev/target-utilization-percentage": lambda v: (
        _float_pos(v) and float(v) <= 100
    ),
    "autoscaling.knative.dev/min-scale": _int(0),
    "autoscaling.knative.dev/max-scale": _int(0),
    "autoscaling.knative.dev/initial-scale": _int(0),
    "autoscaling.knative.dev/activation-scale": _int(1),
    "autoscaling.knative.dev/scale-down-delay": lambda v: bool(DURATION.match(v)),
    "autoscaling.knative.dev/window": lambda v: bool(DURATION.match(v)),
    "autoscaling.knative.dev/panic-window-percentage": _float_pos,
    "autoscaling.knative.dev/panic-threshold-percentage": _float_pos,
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period": lambda v: bool(DURATION.match(v)),
    "serving.knative.dev/progress-deadline": lambda v: bool(DURATION.match(v)),
}
OTHER_ANNOTATION_PREFIXES = ("prometheus.io/",)


def load(path: Path) -> dict:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1, f"{path}: one resource per file"
    return docs[0]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture(params=KSVC_FILES, ids=[p.name for p in KSVC_FILES])
def ksvc(request) -> tuple[Path, dict]:
    return request.param, load(request.param)


def container(doc: dict) -> dict:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_k8s_holds_only_knative_services_kubectl_can_apply():
    assert len(KSVC_FILES) == 2
    names = [p.name for p in (ROOT / "k8s").iterdir() if p.is_file()]
    assert not [n for n in names if n.startswith("kustomization")]
    assert all(n.endswith(".yaml") for n in names)
    for path in KSVC_FILES:
        doc = load(path)
        assert doc["apiVersion"] == "serving.knative.dev/v1" and doc["kind"] == "Service"


@pytest.mark.skipif(not KNATIVE_SCHEMA.is_file(), reason=f"no Knative schema at {KNATIVE_SCHEMA}")
def test_knative_services_validate_against_the_crd_schema(ksvc):
    path, _ = ksvc
    result = run_tool(str(BIN / "check-jsonschema"), "--schemafile", str(KNATIVE_SCHEMA), str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not KNATIVE_SCHEMA.is_file(), reason=f"no Knative schema at {KNATIVE_SCHEMA}")
def test_the_schema_check_can_fail(tmp_path):
    doc = load(KSVC_FILES[0])
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = run_tool(str(BIN / "check-jsonschema"), "--schemafile", str(KNATIVE_SCHEMA), str(bad))
    assert result.returncode != 0


def test_pod_templates_are_valid_core_pods(ksvc, tmp_path):
    """Knative fills in the probe port; everything else must already be a valid PodSpec."""
    path, doc = ksvc
    spec = copy.deepcopy(doc["spec"]["template"]["spec"])
    for key in (
        "containerConcurrency",
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
        "idleTimeoutSeconds",
    ):
        spec.pop(key, None)
    port = spec["containers"][0]["ports"][0]["containerPort"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in spec["containers"][0]:
            spec["containers"][0][probe]["httpGet"]["port"] = port
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": doc["metadata"]["name"]},
        "spec": spec,
    }
    out = tmp_path / f"pod-{path.name}"
    out.write_text(yaml.safe_dump(pod))
    result = run_tool(str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(out))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    not SKAFFOLD_SCHEMA.is_file(), reason=f"no skaffold schema at {SKAFFOLD_SCHEMA}"
)
def test_skaffold_validates():
    result = run_tool(
        str(BIN / "check-jsonschema"),
        "--schemafile",
        str(SKAFFOLD_SCHEMA),
        str(ROOT / "skaffold.yaml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes_at_warning_threshold(dockerfile):
    result = run_tool(str(BIN / "hadolint"), "--failure-threshold", "warning", str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_annotations_are_known_knative_keys_with_valid_values(ksvc):
    path, doc = ksvc
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    for key, value in annotations.items():
        if key.startswith(OTHER_ANNOTATION_PREFIXES):
            continue
        assert key in KNATIVE_ANNOTATIONS, f"{path.name}: unknown or legacy annotation {key}"
        assert isinstance(value, str) and KNATIVE_ANNOTATIONS[key](value), (key, value)
    assert annotations["autoscaling.knative.dev/class"] == KPA
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    lo = int(annotations["autoscaling.knative.dev/min-scale"])
    hi = int(annotations["autoscaling.knative.dev/max-scale"])
    assert lo <= int(annotations["autoscaling.knative.dev/initial-scale"]) <= hi
    assert "name" not in doc["spec"]["template"]["metadata"], (
        "a fixed revision name breaks redeploys"
    )


def test_concurrency_matches_the_services_own_limit(ksvc):
    _, doc = ksvc
    spec = doc["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in container(doc)["env"]}
    concurrency = spec["containerConcurrency"]
    target = float(
        doc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/target"]
    )
    assert 0 < target <= concurrency
    assert concurrency <= int(env["MAX_QUEUE_SIZE"]), (
        "Knative must never send more than the app admits"
    )
    assert 0 < spec["timeoutSeconds"] <= 600


def test_single_port_not_reserved_and_matching_the_settings(ksvc):
    _, doc = ksvc
    ports = container(doc)["ports"]
    assert len(ports) == 1
    assert ports[0]["containerPort"] not in RESERVED_PORTS
    assert ports[0]["containerPort"] == Settings.model_fields["port"].default
    assert doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(
        ports[0]["containerPort"]
    )


def test_probe_and_metrics_paths_are_routes_of_the_app(ksvc):
    from service.routes import router

    routes = {route.path for route in router.routes}  # type: ignore[attr-defined]
    assert {"/predict", "/healthz", "/readyz", "/metrics"} <= routes
    _, doc = ksvc
    c = container(doc)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "periodSeconds" not in c["readinessProbe"], "let Knative probe aggressively"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in c:
            assert c[probe]["httpGet"]["path"] in routes
    assert doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] in routes


def test_env_names_are_exactly_settings_fields(ksvc):
    _, doc = ksvc
    fields = {name.upper() for name in Settings.model_fields}
    env = {e["name"]: e["value"] for e in container(doc)["env"]}
    assert set(env) <= fields, set(env) - fields
    Settings(**{k.lower(): v for k, v in env.items()})  # the values validate too


def test_env_names_in_dockerfiles_and_env_example_are_settings_fields():
    fields = {name.upper() for name in Settings.model_fields}
    allowed_extra = {
        "PATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "HOME",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "PIP_INDEX_URL",
    }
    for dockerfile in DOCKERFILES:
        names = set(re.findall(r"^\s*(?:ENV\s+)?([A-Z_]+)=", dockerfile.read_text(), re.MULTILINE))
        assert names - allowed_extra <= fields, (dockerfile.name, names - allowed_extra - fields)
    example = (ROOT / ".env.example").read_text()
    assert set(re.findall(r"^([A-Z_]+)=", example, re.MULTILINE)) == fields


def test_security_context_and_resources(ksvc):
    _, doc = ksvc
    spec = doc["spec"]["template"]["spec"]
    c = container(doc)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["enableServiceLinks"] is False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = {e["name"]: e["value"] for e in c["env"]}
    limits = c["resources"]["limits"]
    assert int(env["NUM_THREADS"]) == int(limits["cpu"]) == int(c["resources"]["requests"]["cpu"])
    for dockerfile in DOCKERFILES:
        assert f"USER {sc['runAsUser']}:{sc['runAsGroup']}" in dockerfile.read_text()


def test_traffic_tags_follow_the_latest_revision(ksvc):
    _, doc = ksvc
    traffic = doc["spec"]["traffic"]
    assert sum(t["percent"] for t in traffic) == 100
    for entry in traffic:
        assert "revisionName" not in entry or entry.get("latestRevision") is False


def test_cpu_and_gpu_revisions():
    cpu, gpu = load(ROOT / "k8s" / "densenet-cpu.yaml"), load(ROOT / "k8s" / "densenet-gpu.yaml")
    cpu_env = {e["name"]: e["value"] for e in container(cpu)["env"]}
    gpu_env = {e["name"]: e["value"] for e in container(gpu)["env"]}
    assert cpu_env["MODEL_RUNTIME"] == "onnxruntime"
    assert (
        cpu["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"]
        == "0"
    )
    assert "nvidia.com/gpu" not in container(cpu)["resources"]["limits"]
    assert gpu_env["MODEL_VARIANT"] == gpu_env["MODEL_RUNTIME"] == "tensorrt"
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["spec"]["template"]["spec"]["tolerations"]
    assert gpu["spec"]["template"]["spec"]["nodeSelector"]
    assert "startupProbe" in container(gpu)
    assert int(gpu_env["MAX_BATCH_SIZE"]) > 1


def test_images_match_skaffold_artifacts():
    skaffold = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert skaffold["apiVersion"] == "skaffold/v4beta14"
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert set(profiles) == {"cpu", "gpu"}
    for name, manifest in (("cpu", "densenet-cpu.yaml"), ("gpu", "densenet-gpu.yaml")):
        profile = profiles[name]
        images = {a["image"]: a["docker"]["dockerfile"] for a in profile["build"]["artifacts"]}
        assert profile["manifests"]["rawYaml"] == [f"k8s/{manifest}"]
        assert container(load(ROOT / "k8s" / manifest))["image"] in images
        for dockerfile in images.values():
            assert (ROOT / dockerfile).is_file()


def test_cpu_image_ships_no_torch():
    text = (ROOT / "Dockerfile").read_text()
    assert '".[onnx]"' in text and "find_spec('torch') is None" in text
    assert re.search(r'^CMD \["python", "-m", "service", "serve"\]$', text, re.MULTILINE)
    assert "AS build" in text and "AS runtime" in text
    assert "ARG BASE_IMAGE" in text and "ARG PIP_INDEX_URL" in text
