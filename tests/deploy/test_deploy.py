"""Deployment files: schemas, what Knative does to them, and consistency with the code.

There is no cluster here. Each Knative Service is checked against the Knative Serving v1 CRD
schema (``KNATIVE_SCHEMA``); ``tests/deploy/knative.py`` then models what the cluster does
next (the webhook's feature flags, tag resolution, the pod the reconciler makes, queue-proxy's
drain) and that pod is checked against the core Pod schema (``kubernetes-validate
--strict``). Both kustomize overlays are rendered with ``kubectl kustomize`` and checked the
same way; skaffold.yaml against its schema; every Dockerfile with hadolint. Each model check
is also shown failing on the broken form it exists for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from tests.deploy import knative, paths
from tests.support import ROOT, documentation

BIN = Path(sys.executable).parent
SCHEMAS = ROOT.parent / "shared" / "schemas"
KNATIVE_SCHEMA = Path(os.environ.get("KNATIVE_SCHEMA", SCHEMAS / "knative-service-serving-v1.json"))
SKAFFOLD_SCHEMA = Path(os.environ.get("SKAFFOLD_SCHEMA", SCHEMAS / "skaffold-v4beta14.json"))
SERVICE_SCHEMAS = {
    "Service": KNATIVE_SCHEMA,
    "Route": SCHEMAS / "knative-route-serving-v1.json",
}
CPU_KSVC = ROOT / "k8s" / "densenet-cpu.yaml"
GPU_KSVC = ROOT / "k8s-overlays" / "gpu" / "densenet-gpu.yaml"
KSVC_FILES = [CPU_KSVC, GPU_KSVC]
OVERLAYS = ["cpu", "gpu", "gpu-torch"]
FEATURES_PATCH = ROOT / "k8s" / "knative" / "config-features-patch.yaml"
PODMONITOR = ROOT / "k8s" / "monitoring" / "podmonitor.yaml"
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "Dockerfile.gpu"]  # the serving images
# Every Dockerfile in the repository (the stack's Locust and TensorBoard images too), found
# rather than listed.
ALL_DOCKERFILES = sorted(
    p
    for p in ROOT.rglob("*Dockerfile*")
    if not {".venv", "node_modules", ".git"} & set(p.relative_to(ROOT).parts)
)
SHUTDOWN_MARGIN_S = 5  # the app's exit with nothing in flight, with room to spare
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
    "autoscaling.knative.dev/target-burst-capacity": lambda v: v == "-1" or _int(0)(v),
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


def env_of(doc: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(doc)["env"]}


def features_with_patch() -> dict[str, str]:
    return {**knative.STOCK_FEATURES, **yaml.safe_load(FEATURES_PATCH.read_text())["data"]}


def kubectl_apply_f_files() -> list[Path]:
    """What ``kubectl apply -f k8s/`` reads: the folder's own .yaml/.yml/.json files."""
    return sorted(p for p in (ROOT / "k8s").iterdir() if p.suffix in {".yaml", ".yml", ".json"})


def test_kubectl_apply_f_k8s_is_the_cpu_service_and_a_stock_knative_admits_it():
    files = kubectl_apply_f_files()
    assert files == [CPU_KSVC]
    doc = load(CPU_KSVC)
    assert doc["apiVersion"] == "serving.knative.dev/v1" and doc["kind"] == "Service"
    assert knative.admission_errors(doc, knative.STOCK_FEATURES) == []
    assert knative.image_errors(container(doc)["image"]) == []


def test_the_gpu_service_needs_the_feature_flags_the_patch_enables():
    gpu = load(GPU_KSVC)
    errors = knative.admission_errors(gpu, knative.STOCK_FEATURES)
    assert any("nodeSelector" in e for e in errors) and any("tolerations" in e for e in errors)
    assert any("affinity" in e for e in errors)
    assert knative.admission_errors(gpu, features_with_patch()) == []
    assert "kustomization" not in "".join(p.name.lower() for p in kubectl_apply_f_files())


def test_admission_check_can_fail():
    doc = load(CPU_KSVC)
    spec = doc["spec"]["template"]["spec"]
    spec["affinity"] = {}
    spec["containers"][0]["ports"][0].update(name="web", containerPort=9090)
    errors = knative.admission_errors(doc, knative.STOCK_FEATURES)
    assert len(errors) == 3, errors


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


def validate_core(docs: list[dict], tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / f"{name}.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    return run_tool(str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(out))


def test_revision_pods_are_valid_core_pods(ksvc, tmp_path):
    """The pod Knative makes from the template, not the template with ports filled in."""
    path, doc = ksvc
    result = validate_core([knative.revision_pod(doc)], tmp_path, path.stem)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_startup_probe_without_a_port_makes_an_invalid_pod(tmp_path):
    # Knative fills in the liveness probe's port and runs the readiness probe itself, but it
    # passes a startup probe through: without a port the Deployment is refused.
    doc = load(GPU_KSVC)
    del container(doc)["startupProbe"]["httpGet"]["port"]
    result = validate_core([knative.revision_pod(doc)], tmp_path, "broken")
    assert result.returncode != 0
    assert "port" in result.stdout + result.stderr


def test_drain_fits_in_the_grace_period(ksvc):
    _, doc = ksvc
    drain = float(env_of(doc).get("DRAIN_SECONDS", Settings.model_fields["drain_seconds"].default))
    assert knative.drain_errors(doc, drain, SHUTDOWN_MARGIN_S) == []


def test_drain_check_catches_the_old_arithmetic():
    doc = load(CPU_KSVC)
    doc["spec"]["template"]["spec"]["timeoutSeconds"] = 30
    (error,) = knative.drain_errors(doc, 3.0, SHUTDOWN_MARGIN_S)
    assert "30 < 38" in error


def test_podmonitor_scrapes_ports_the_revision_pods_have():
    monitor = load(PODMONITOR)
    assert monitor["metadata"]["labels"]["release"]  # kube-prometheus-stack's selector
    wanted = [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]]
    assert "queue-port" not in wanted  # a scrape there counts as a request
    selector = monitor["spec"]["selector"]["matchLabels"]
    for path in KSVC_FILES:
        pod = knative.revision_pod(load(path))
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert set(wanted) <= set(knative.container_ports(pod)), path.name
        assert "http1" not in knative.container_ports(pod)  # renamed: the old monitor's port


def test_image_references_resolve():
    assert knative.image_errors("kind.local/densenet-serving-cpu:0.1.0") == []
    assert knative.image_errors("registry.io/x/densenet@sha256:" + "a" * 64) == []
    assert knative.image_errors("densenet-serving-cpu")  # bare, never pushed
    assert knative.image_errors("registry.io/x/densenet:v1")  # a tag: pin the digest
    assert knative.image_errors("kind.local/densenet-serving-cpu")  # :latest is always pulled


def render(overlay: str) -> list[dict]:
    return paths.render(ROOT / "k8s-overlays" / overlay)


# What a registry deployment sets before `kubectl apply -k` (the commands docs/deploy.md gives).
PUSHED = {
    f"kind.local/densenet-serving-{name}": f"registry.io/x/densenet-serving-{name}@sha256:"
    + "a" * 64
    for name in ("cpu", "gpu")
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_render_to_resources_a_cluster_accepts(overlay, tmp_path):
    docs = paths.render_overlay(overlay, PUSHED, tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert all(
        d["metadata"].get("namespace") == "densenet" for d in docs if d["kind"] != "Namespace"
    )
    core = [d for d in docs if d["apiVersion"] in {"v1", "networking.k8s.io/v1"}]
    assert {d["kind"] for d in core} == {"Namespace", "NetworkPolicy"}
    result = validate_core(core, tmp_path, f"{overlay}-core")
    assert result.returncode == 0, result.stdout + result.stderr
    for i, doc in enumerate(d for d in docs if d["apiVersion"] == "serving.knative.dev/v1"):
        path = tmp_path / f"{overlay}-{i}.yaml"
        path.write_text(yaml.safe_dump(doc))
        schema = SERVICE_SCHEMAS[doc["kind"]]
        result = run_tool(str(BIN / "check-jsonschema"), "--schemafile", str(schema), str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        if doc["kind"] == "Service":
            assert knative.admission_errors(doc, features_with_patch()) == []
            assert knative.image_errors(container(doc)["image"]) == []
            assert knative.DIGEST.search(container(doc)["image"])
            pod = validate_core([knative.revision_pod(doc)], tmp_path, f"{overlay}-pod-{i}")
            assert pod.returncode == 0, pod.stdout + pod.stderr
    expected = ["Namespace", "NetworkPolicy", "Service"] + (
        ["Route", "Service"] if overlay.startswith("gpu") else []
    )
    assert kinds == sorted(expected)


def test_gpu_overlay_pins_the_gpu_product_and_routes_both_services():
    docs = render("gpu")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    pod = services["densenet-gpu"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"].get("nvidia.com/gpu.product")
    # Only nodes whose driver runs torch's CUDA 13 build (R580+).
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expression,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expression == {
        "key": "nvidia.com/cuda.driver-version.major",
        "operator": "Gt",
        "values": ["579"],
    }
    (route,) = [d for d in docs if d["kind"] == "Route"]
    traffic = route["spec"]["traffic"]
    assert sum(t["percent"] for t in traffic) == 100
    assert {t["tag"] for t in traffic} == {"cpu", "gpu"}
    assert {t["configurationName"] for t in traffic} == set(services)


def test_gpu_torch_overlay_serves_torch_on_cuda_on_any_gpu_with_the_driver():
    """No TensorRT engine: the baseline's torch weights, fp16 + CUDA graphs, its own image;
    no GPU product pin (that is for engines), the R580+ driver rule kept."""
    (gpu,) = [d for d in render("gpu-torch") if d["metadata"]["name"] == "densenet-gpu"]
    spec = gpu["spec"]["template"]["spec"]
    env = env_of(gpu)
    assert (env["MODEL_VARIANT"], env["MODEL_RUNTIME"], env["DEVICE"]) == (
        "baseline",
        "torch",
        "cuda",
    )
    assert (env["CUDA_PRECISION"], env["CUDA_GRAPHS"]) == ("fp16", "true")
    assert "nvidia.com/gpu.product" not in spec["nodeSelector"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expression,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expression["key"] == "nvidia.com/cuda.driver-version.major"
    assert container(gpu)["image"] == "kind.local/densenet-serving-gpu-torch:0.1.0"
    dockerfile = (ROOT / "Dockerfile.gpu").read_text()
    for arg in ("MODEL_VARIANT", "MODEL_RUNTIME", "MODEL_FILE"):
        assert re.search(rf"^ARG {arg}=", dockerfile, re.MULTILINE), arg
    assert "COPY models/${MODEL_VARIANT}/manifest.json models/${MODEL_VARIANT}/${MODEL_FILE}" in (
        dockerfile
    )
    # The torch weights must reach the build context.
    assert "model.pt" not in (ROOT / ".dockerignore").read_text()


def test_network_policy_admits_the_data_plane_and_prometheus_only():
    (policy,) = [d for d in render("cpu") if d["kind"] == "NetworkPolicy"]
    pod_ports = set(knative.container_ports(knative.revision_pod(load(CPU_KSVC))).values())
    rules = policy["spec"]["ingress"]
    allowed = {p["port"] for rule in rules for p in rule["ports"]}
    assert allowed <= pod_ports
    assert {8012, 9090} <= allowed  # requests from the activator, metrics for the autoscaler
    for rule in rules:
        sources = {
            s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for s in rule["from"]
        }
        if "monitoring" in sources:
            assert 8012 not in {p["port"] for p in rule["ports"]}


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


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
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
    assert ports[0]["containerPort"] not in knative.RESERVED_PORTS
    assert ports[0]["containerPort"] == Settings.model_fields["port"].default
    assert doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(
        ports[0]["containerPort"]
    )


def test_probe_and_metrics_paths_are_routes_of_the_app(ksvc):
    from service.app import create_app

    routes = {getattr(route, "path", None) for route in create_app().router.routes}
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
        "PIP_EXTRA_INDEX_URL",
    }
    for dockerfile in DOCKERFILES:
        names = set(
            re.findall(r"^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]*)=", dockerfile.read_text(), re.MULTILINE)
        )
        assert names - allowed_extra <= fields, (dockerfile.name, names - allowed_extra - fields)
    example = (ROOT / ".env.example").read_text()
    assert set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.MULTILINE)) == fields


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
    # Engine workers x intra-op threads fill the CPU quota, no more.
    cpus = int(limits["cpu"])
    assert cpus == int(c["resources"]["requests"]["cpu"])
    assert int(env.get("ENGINE_WORKERS", "1")) * int(env["NUM_THREADS"]) == cpus
    for dockerfile in DOCKERFILES:
        assert f"USER {sc['runAsUser']}:{sc['runAsGroup']}" in dockerfile.read_text()


def test_traffic_tags_follow_the_latest_revision(ksvc):
    _, doc = ksvc
    traffic = doc["spec"]["traffic"]
    assert sum(t["percent"] for t in traffic) == 100
    for entry in traffic:
        assert "revisionName" not in entry or entry.get("latestRevision") is False


def test_cpu_and_gpu_revisions():
    cpu, gpu = load(CPU_KSVC), load(GPU_KSVC)
    cpu_env, gpu_env = env_of(cpu), env_of(gpu)
    assert cpu_env["MODEL_RUNTIME"] == "onnxruntime"
    cpu_annotations = cpu["spec"]["template"]["metadata"]["annotations"]
    assert cpu_annotations["autoscaling.knative.dev/min-scale"] == "0"
    # Holding the last pod after traffic stops is the retention period; a scale-down delay
    # would also hold back every scale-in.
    assert "autoscaling.knative.dev/scale-to-zero-pod-retention-period" in cpu_annotations
    assert "autoscaling.knative.dev/scale-down-delay" not in cpu_annotations
    assert "nvidia.com/gpu" not in container(cpu)["resources"]["limits"]
    assert gpu_env["MODEL_VARIANT"] == gpu_env["MODEL_RUNTIME"] == "tensorrt"
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["spec"]["template"]["spec"]["tolerations"]
    assert gpu["spec"]["template"]["spec"]["nodeSelector"]
    startup = container(gpu)["startupProbe"]
    assert startup["httpGet"]["port"] == knative.user_port(gpu)
    assert startup["periodSeconds"] == 1
    assert int(gpu_env["MAX_BATCH_SIZE"]) > 1
    assert "ephemeral-storage" in container(gpu)["resources"]["requests"]


def pod_capacity(doc: dict) -> float:
    """What Knative counts as one pod's capacity for the burst check (``ResolveMetricTarget``,
    ``pkg/reconciler/autoscaling/resources/target.go``): the target annotation, but never
    more than containerConcurrency."""
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    cc = doc["spec"]["template"]["spec"]["containerConcurrency"]
    target = float(annotations.get("autoscaling.knative.dev/target", cc or 100))
    return min(target, cc) if cc else target


def test_pod_capacity_follows_knative_not_container_concurrency():
    doc = load(GPU_KSVC)
    assert doc["spec"]["template"]["spec"]["containerConcurrency"] == 64
    assert pod_capacity(doc) == 48  # target 48 < cc 64: Knative counts 48 a pod


def test_burst_capacity_is_below_each_services_capacity(ksvc):
    _, doc = ksvc
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    capacity = int(annotations["autoscaling.knative.dev/max-scale"]) * pod_capacity(doc)
    burst = int(annotations["autoscaling.knative.dev/target-burst-capacity"])
    # -1 keeps the activator in the path on purpose (the capacity plan simulates it so); a
    # positive value above the whole capacity would do the same by accident.
    assert burst == -1 or 0 <= burst < capacity


def test_gpu_progress_deadline_covers_the_startup_budget():
    annotations = load(GPU_KSVC)["spec"]["template"]["metadata"]["annotations"]
    deadline = int(annotations["serving.knative.dev/progress-deadline"].rstrip("s"))
    startup = container(load(GPU_KSVC))["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert deadline >= budget + 600  # plus a GPU node scale-up and a multi-GB image pull


def test_skaffold_builds_the_images_the_manifests_name():
    skaffold = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert skaffold["apiVersion"] == "skaffold/v4beta14"
    for config in paths.skaffold_configs(skaffold).values():
        images = {a["image"]: a["docker"]["dockerfile"] for a in config["build"]["artifacts"]}
        for dockerfile in images.values():
            assert (ROOT / dockerfile).is_file()
    docs = documentation()
    assert "--default-repo" in docs and "REGISTRY/kind_local_densenet-serving-cpu" in docs


def test_cpu_image_ships_no_torch():
    text = (ROOT / "Dockerfile").read_text()
    # One lock, the runtime's: onnxruntime (the default) or openvino, never torch.
    assert "ARG MODEL_RUNTIME=onnxruntime" in text and "MODEL_RUNTIME=${MODEL_RUNTIME}" in text
    assert "onnxruntime|openvino) ;;" in text
    assert '-r "requirements/serve-${MODEL_RUNTIME}.txt"' in text
    assert "find_spec('torch') is None" in text
    for runtime in ("onnxruntime", "openvino"):
        lock = (ROOT / "requirements" / f"serve-{runtime}.txt").read_text()
        assert f"\n{runtime}==" in lock and "\ntorch==" not in lock
    assert re.search(r'^CMD \["python", "-m", "service", "serve"\]$', text, re.MULTILINE)
    assert "AS build" in text and "AS runtime" in text
    assert "ARG BASE_IMAGE" in text and "ARG PIP_INDEX_URL" in text


def test_the_canary_recipe_serves_the_variant_its_image_was_built_for(tmp_path):
    from service.variants import get_variant

    (doc,) = render("canary")
    image = container(doc)["image"]
    variant = env_of(doc)["MODEL_VARIANT"]
    assert image.rsplit(":", 1)[1] == variant  # built with --build-arg MODEL_VARIANT=<tag>
    row = get_variant(variant)
    assert row.cpu and env_of(doc)["MODEL_RUNTIME"] in row.runtimes
    assert variant != env_of(load(CPU_KSVC))["MODEL_VARIANT"]
    assert knative.admission_errors(doc, knative.STOCK_FEATURES) == []
    assert knative.image_errors(image) == []
    traffic = doc["spec"]["traffic"]
    assert sum(t["percent"] for t in traffic) == 100
    assert [t.get("latestRevision", False) for t in traffic] == [False, True]
    assert {t["tag"] for t in traffic} == {"current", "candidate"}
    assert "ARG MODEL_VARIANT" in (ROOT / "Dockerfile").read_text()
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_tool(str(BIN / "check-jsonschema"), "--schemafile", str(KNATIVE_SCHEMA), str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_images_ship_no_pip_and_see_only_the_gpus_they_are_given(dockerfile):
    text = dockerfile.read_text()
    assert "python -m venv --without-pip /opt/venv" in text
    assert "--python /opt/venv/bin/python install" in text
    # The device plugin sets it to the pod's own GPU; a baked-in "all" would show every GPU
    # to a pod without a GPU limit.
    assert not re.search(r"^\s*(ENV\s+)?NVIDIA_VISIBLE_DEVICES=", text, re.MULTILINE)


# What each Service's process takes once ready, before any request: measured for the CPU
# revision (115 MiB, tests/e2e/test_hardening.py); for the GPU one (torch, CUDA context,
# TensorRT engine; never measured here) a generous allowance.
READY_PROCESS_BYTES = {"densenet-cpu": 128 * 2**20, "densenet-gpu": 8 * 2**30}


def admitted_bytes(settings: Settings, service: str) -> int:
    """Images (MAX_QUEUE_SIZE x MAX_IMAGE_BYTES) + bodies (uploads being received and
    admitted requests, each up to MAX_BODY_BYTES) + the ready process."""
    images = settings.max_image_bytes * settings.max_queue_size
    # Uploads being received hold their body twice at the end of a multipart read (the part
    # spooled to /tmp and its bytes); admitted requests hold it once.
    bodies = settings.max_body_bytes * (2 * settings.uploads + settings.max_queue_size)
    return images + bodies + READY_PROCESS_BYTES[service]


def test_admitted_work_fits_in_the_memory_limit(ksvc):
    """Everything admitted <= the memory limit, and the in-memory /tmp holds every upload's
    spooled part."""
    _, doc = ksvc
    env = env_of(doc)
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    limit = container(doc)["resources"]["limits"]["memory"]
    units = {"Mi": 2**20, "Gi": 2**30}
    limit_bytes = int(limit[:-2]) * units[limit[-2:]]
    assert admitted_bytes(settings, doc["metadata"]["name"]) <= limit_bytes
    tmp = next(v for v in doc["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    tmp_limit = tmp["emptyDir"]["sizeLimit"]
    assert int(tmp_limit[:-2]) * units[tmp_limit[-2:]] >= settings.uploads * settings.max_body_bytes


def test_the_gpu_image_gives_its_user_a_passwd_entry():
    """torch_tensorrt calls pwd.getpwuid() at import; the uid the image runs as must exist."""
    text = (ROOT / "Dockerfile.gpu").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
    assert user is not None
    before = text[: user.start()]
    assert re.search(rf"useradd\b[^\n]*(\\\n[^\n]*)*--uid {user.group(1)}\b", before)
    assert f"groupadd --gid {user.group(2)}" in before


def test_the_gpu_extra_pins_the_tensorrt_its_engines_need_and_the_image_can_fetch_it():
    """An engine runs only on the TensorRT that built it, and TensorRT's libraries are on
    NVIDIA's index, not PyPI."""
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = dict(re.fullmatch(r"([\w.-]+)==([\w.]+)", d).groups() for d in extra["gpu"] if "==" in d)
    assert pins["torch-tensorrt"] == "2.14.0"
    assert re.fullmatch(r"11\.1\.\d+\.\d+", pins["tensorrt-cu13"])  # torch-tensorrt 2.14: 11.1
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "ARG NVIDIA_INDEX_URL=https://pypi.nvidia.com" in text
    assert "PIP_EXTRA_INDEX_URL=${NVIDIA_INDEX_URL}" in text


def test_the_cpu_revisions_variant_is_the_default_of_what_builds_and_measures_it():
    """The image, the local stack and the load test default to the variant the CPU revision
    serves, so `make image`, `make stack` and `make loadtest` build and measure that one."""
    variant = env_of(load(CPU_KSVC))["MODEL_VARIANT"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^ARG MODEL_VARIANT={re.escape(variant)}$", dockerfile, re.MULTILINE)
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["densenet"]
    assert compose["build"]["args"]["MODEL_VARIANT"] == f"${{MODEL_VARIANT:-{variant}}}"
    # The load test and the loop profile read the Service itself.
    sys.path.insert(0, str(ROOT / "loadtest"))
    import run

    assert run.served() == (variant, env_of(load(CPU_KSVC))["MODEL_RUNTIME"])
    for script in ("loadtest/run.py", "loadtest/profile_loop.py"):
        assert "variant, runtime = served()" in (ROOT / script).read_text(), script
