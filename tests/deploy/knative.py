"""What Knative Serving 1.23 does to a Service before a pod runs, modelled offline.

A schema pass says the YAML is well formed; a cluster also runs Knative's admission webhook
(fields behind feature flags), its tag-to-digest resolution, and the revision reconciler that
turns the template into a pod (port renaming, probe rewriting, the queue-proxy sidecar, the
pre-stop drain). Each function here mirrors one of those, read from knative/serving:
``pkg/apis/serving/fieldmask.go`` (PodSpecMask), ``pkg/apis/serving/k8s_validation.go``,
``pkg/reconciler/revision/resources/deploy.go`` and ``queue.go``,
``pkg/queue/sharedmain/main.go`` (drainSleepDuration) and ``config/core/configmaps``.
"""

from __future__ import annotations

import copy
import re
from typing import Any

# config-features as a stock install ships it: every pod-spec field below is refused.
FLAGGED_POD_FIELDS = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
STOCK_FEATURES = {flag: "disabled" for flag in FLAGGED_POD_FIELDS.values()}
ALWAYS_ALLOWED_POD_FIELDS = {
    "containers",
    "volumes",
    "serviceAccountName",
    "imagePullSecrets",
    "enableServiceLinks",
    "automountServiceAccountToken",
    # Revision-spec fields that live beside the pod spec in the template.
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
}
# config-deployment's registries-skipping-tag-resolving default.
SKIP_TAG_RESOLUTION = ("kind.local", "ko.local", "dev.local")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# The queue-proxy sidecar's declared ports, by the names Knative gives them in the pod
# (an h2c revision serves on 8013 instead of 8012).
QUEUE_PROXY_PORTS = {
    "http-autometric": 9090,
    "http-usermetric": 9091,
    "queue-port": 8012,
    "https-port": 8112,
}
QUEUE_ADMIN_PORT = 8022  # not declared: kubelet calls /wait-for-drain on it
RESERVED_PORTS = {8008, 8012, 8013, 8022, 9090, 9091}  # 8008: profiling
USER_PORT_NAME = "user-port"
ALLOWED_PORT_NAMES = {"", "http1", "h2c"}
# queue-proxy's /wait-for-drain (the user container's pre-stop hook) returns only after no
# request has arrived for this long; the app's SIGTERM comes after it.
QUEUE_PROXY_QUIET_PERIOD_S = 30
DEFAULT_TIMEOUT_S = 300


def template_spec(ksvc: dict[str, Any]) -> dict[str, Any]:
    """The revision template's spec (pod spec plus revision fields)."""
    spec: dict[str, Any] = ksvc["spec"]["template"]["spec"]
    return spec


def admission_errors(ksvc: dict[str, Any], features: dict[str, str]) -> list[str]:
    """What the webhook refuses: flagged fields, several ports, reserved or renamed ports."""
    spec = template_spec(ksvc)
    errors = []
    for field in sorted(set(spec) - ALWAYS_ALLOWED_POD_FIELDS):
        flag = FLAGGED_POD_FIELDS.get(field)
        if flag is None:
            errors.append(f"must not set the field(s): spec.template.spec.{field}")
        elif features.get(flag, "disabled") == "disabled":
            errors.append(
                f"must not set the field(s): spec.template.spec.{field} (needs {flag}: enabled)"
            )
    containers = spec["containers"]
    serving = [c for c in containers if c.get("ports")] or containers[:1]
    if len(serving) != 1:
        errors.append("exactly one container must declare a port")
    for container in serving:
        ports = container.get("ports", [])
        if len(ports) > 1:
            errors.append("more than one container port is set")
        for port in ports:
            if port.get("name", "") not in ALLOWED_PORT_NAMES:
                errors.append(f"port name {port['name']!r} must be one of http1, h2c")
            if port["containerPort"] in RESERVED_PORTS:
                errors.append(f"port {port['containerPort']} is reserved for the queue-proxy")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            name = ports[0].get("name", "") if ports else ""
            if isinstance(port, str) and port != name:
                errors.append(
                    f"{probe}.httpGet.port {port!r}: probe port must match the container port"
                )
    return errors


def user_port(ksvc: dict[str, Any]) -> int:
    """The serving container's port (Knative's default 8080 when none is declared)."""
    container = template_spec(ksvc)["containers"][0]
    ports = container.get("ports") or [{"containerPort": 8080}]
    return int(ports[0]["containerPort"])


def revision_pod(ksvc: dict[str, Any]) -> dict[str, Any]:
    """The pod the revision reconciler makes: what a kubelet, a PodMonitor and a NetworkPolicy
    see.

    The user container's port is renamed ``user-port`` and exported as ``PORT``; the liveness
    probe gets the user port when it has none; the readiness probe is removed (queue-proxy
    runs it); a startup probe is passed through unchanged; a pre-stop hook waits for
    queue-proxy's drain; ``terminationGracePeriodSeconds`` is the revision's timeout; the
    queue-proxy sidecar is added with its own ports.
    """
    spec = copy.deepcopy(template_spec(ksvc))
    timeout = spec.get("timeoutSeconds", DEFAULT_TIMEOUT_S)
    for key in (
        "containerConcurrency",
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
        "idleTimeoutSeconds",
    ):
        spec.pop(key, None)
    port = user_port(ksvc)
    container = spec["containers"][0]
    container["ports"] = [{"name": USER_PORT_NAME, "containerPort": port, "protocol": "TCP"}]
    container.setdefault("env", []).append({"name": "PORT", "value": str(port)})
    liveness = container.get("livenessProbe", {}).get("httpGet")
    if liveness is not None and not liveness.get("port"):
        liveness["port"] = port
    container.pop("readinessProbe", None)
    container["lifecycle"] = {
        "preStop": {"httpGet": {"path": "/wait-for-drain", "port": QUEUE_ADMIN_PORT}}
    }
    spec["terminationGracePeriodSeconds"] = timeout
    spec["containers"].append(
        {
            "name": "queue-proxy",
            "image": "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:" + "0" * 64,
            "ports": [
                {"name": name, "containerPort": number, "protocol": "TCP"}
                for name, number in QUEUE_PROXY_PORTS.items()
            ],
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": ksvc["metadata"]["name"],
            "labels": {
                **ksvc["spec"]["template"].get("metadata", {}).get("labels", {}),
                "serving.knative.dev/service": ksvc["metadata"]["name"],
            },
        },
        "spec": spec,
    }


def image_errors(image: str) -> list[str]:
    """Knative resolves a tag to a digest through the image's registry before the revision
    can be ready; a name that was never pushed cannot resolve."""
    if DIGEST.search(image):
        return []
    registry = image.split("/", 1)[0] if "/" in image else ""
    if registry in SKIP_TAG_RESOLUTION:
        return [] if ":" in image.rsplit("/", 1)[-1] else [f"{image}: give a tag other than latest"]
    if not registry or ("." not in registry and ":" not in registry and registry != "localhost"):
        return [f"{image}: a bare name resolves on Docker Hub, where it was never pushed"]
    return [f"{image}: pin a digest (a tag resolves only if it was pushed to {registry})"]


def drain_errors(ksvc: dict[str, Any], drain_seconds: float, stop_margin_s: float) -> list[str]:
    """The grace period (= timeoutSeconds) must cover queue-proxy's quiet period, then the
    app's own drain, then its shutdown; otherwise every scale-down ends in SIGKILL."""
    grace = template_spec(ksvc).get("timeoutSeconds", DEFAULT_TIMEOUT_S)
    needed = QUEUE_PROXY_QUIET_PERIOD_S + drain_seconds + stop_margin_s
    if grace < needed:
        return [
            f"terminationGracePeriodSeconds = timeoutSeconds = {grace} < {needed:g} "
            f"(queue-proxy quiet period {QUEUE_PROXY_QUIET_PERIOD_S} + DRAIN_SECONDS "
            f"{drain_seconds:g} + shutdown {stop_margin_s:g})"
        ]
    return []


def container_ports(pod: dict[str, Any]) -> dict[str, int]:
    """Port name -> number across the pod's containers."""
    return {
        port["name"]: port["containerPort"]
        for container in pod["spec"]["containers"]
        for port in container.get("ports", [])
    }
