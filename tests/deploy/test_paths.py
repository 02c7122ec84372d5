"""Every deploy path the docs give: each check shown failing on the broken form it
exists for, then passing on the shipped files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from tests.deploy import paths
from tests.deploy.test_deploy import CPU_KSVC, admitted_bytes, env_of, load
from tests.support import ROOT, documentation

DOCS = documentation()
SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
OVERLAYS_WITH_SERVICES = ["cpu", "gpu", "gpu-torch"]


def test_skaffold_builds_with_buildkit_for_dockerfiles_that_mount_secrets():
    broken = {**SKAFFOLD, "build": {k: v for k, v in SKAFFOLD["build"].items() if k != "local"}}
    (error,) = paths.buildkit_errors(broken)
    assert "RUN --mount" in error and "useBuildkit" in error
    configs = paths.skaffold_configs(SKAFFOLD)
    assert set(configs) == {"base", "gpu", "gpu-torch"}
    for name, config in configs.items():
        assert paths.buildkit_errors(config) == [], name
        assert "push" not in config["build"].get("local", {}), "push is skaffold's to decide"


def test_skaffold_deploys_the_overlays_and_replaces_every_image(tmp_path):
    configs = paths.skaffold_configs(SKAFFOLD)
    assert {c["manifests"]["kustomize"]["paths"][0] for c in configs.values()} == {
        f"k8s-overlays/{o}" for o in OVERLAYS_WITH_SERVICES
    }
    for name, config in configs.items():
        assert paths.skaffold_replacement_errors(config) == [], name
    # The broken form: an overlay that pins a placeholder digest, which skaffold leaves alone.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(ROOT / "k8s", overlay)],
                "images": [
                    {
                        "name": "kind.local/densenet-serving-cpu",
                        "newName": "registry.example.com/densenet-serving-cpu",
                        "digest": "sha256:" + "0" * 64,
                    }
                ],
            }
        )
    )
    broken = {**SKAFFOLD, "manifests": {"kustomize": {"paths": [str(overlay)]}}}
    (error,) = paths.skaffold_replacement_errors(broken)
    assert "skaffold leaves it as it is" in error


def test_the_gpu_profile_keeps_the_overlays_pins_namespace_and_policy():
    docs = paths.render(
        ROOT / paths.skaffold_configs(SKAFFOLD)["gpu"]["manifests"]["kustomize"]["paths"][0]
    )
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "NetworkPolicy", "Route"} <= kinds
    (gpu,) = [d for d in docs if d["metadata"]["name"] == "densenet-gpu"]
    assert gpu["metadata"]["namespace"] == "densenet"
    assert "nvidia.com/gpu.product" in gpu["spec"]["template"]["spec"]["nodeSelector"]


def test_every_registry_apply_in_the_docs_sets_its_images_first(tmp_path):
    blocks = [b for b in paths.shell_blocks(DOCS) if "kubectl apply -k k8s-overlays/" in b]
    applied = {
        o for b in blocks for o in paths.re.findall(r"kubectl apply -k k8s-overlays/([\w-]+)", b)
    }
    assert {"cpu", "gpu"} <= applied
    for block in blocks:
        assert paths.registry_apply_errors(block, tmp_path) == [], block
    # The broken form: the GPU block without its set-image command.
    (gpu_block,) = [b for b in blocks if "k8s-overlays/gpu" in b and "config-features" in b]
    without = "\n".join(line for line in gpu_block.splitlines() if "set image" not in line)
    errors = paths.registry_apply_errors(without, tmp_path)
    assert any("kind.local/densenet-serving-gpu" in e for e in errors)
    # The broken form: the CPU block reads a digest file that no push in it wrote.
    (cpu_block,) = [b for b in blocks if "--digestfile" in b]
    without_push = "\n".join(line for line in cpu_block.splitlines() if "--digestfile" not in line)
    (error,) = paths.registry_apply_errors(without_push, tmp_path)
    assert "$(cat" in error


@pytest.mark.parametrize("overlay", ["gpu-torch", "loadtest"])
def test_the_kustomizations_own_set_image_commands_leave_no_kind_local_name(overlay, tmp_path):
    comment = (ROOT / "k8s-overlays" / overlay / "kustomization.yaml").read_text()
    block = "\n".join(line.lstrip("# ") for line in comment.splitlines() if line.startswith("#"))
    block = block.replace("\\\n", " ")
    assert paths.registry_apply_errors(block, tmp_path) == []
    assert paths.set_image_edits(block)


def test_podman_builds_are_loaded_into_kind_from_an_archive():
    broken = "podman build -t kind.local/x:1 .\nkind load docker-image kind.local/x:1\n"
    assert paths.kind_load_errors(broken)
    for block in paths.shell_blocks(DOCS):
        assert paths.kind_load_errors(block) == [], block
    assert any("make kind-load ENGINE=podman" in b for b in paths.shell_blocks(DOCS))


def fake_tools(tmp_path: Path, *names: str) -> dict[str, str]:
    """Shims that record their arguments, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_make_kind_load_uses_the_loader_that_sees_the_engines_images(engine, tmp_path):
    env = fake_tools(tmp_path, "kind", "podman", "docker")
    result = subprocess.run(
        ["make", "--no-print-directory", "kind-load", f"ENGINE={engine}", "IMAGE=kind.local/x:1",
         "KIND_CLUSTER=c"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    if engine == "docker":
        assert calls == ["kind load docker-image kind.local/x:1 --name c"]
    else:
        save, load_archive = calls
        assert save.startswith("podman save --format docker-archive -o ")
        archive = save.split(" -o ")[1].split()[0]
        assert save.endswith(" kind.local/x:1")
        assert load_archive == f"kind load image-archive {archive} --name c"


def test_monitoring_watches_the_namespace_each_deployment_runs_in():
    overlay_ns = {
        d["metadata"]["namespace"]
        for o in OVERLAYS_WITH_SERVICES
        for d in paths.render(ROOT / "k8s-overlays" / o)
        if d["kind"] == "Service" and d["apiVersion"] == "serving.knative.dev/v1"
    }
    assert overlay_ns == {"densenet"}
    (monitor,) = [
        d for d in paths.render(ROOT / "k8s-overlays" / "monitoring") if d["kind"] == "PodMonitor"
    ]
    assert paths.monitor_namespace_errors(monitor, "densenet") == []
    # kubectl apply -f k8s/monitoring/ lands in the same (current) namespace as k8s/.
    raw = load(ROOT / "k8s" / "monitoring" / "podmonitor.yaml")
    assert "namespace" not in raw["metadata"] and "namespace" not in load(CPU_KSVC)["metadata"]
    # The broken form: the raw monitor applied without -n beside the overlays.
    (error,) = paths.monitor_namespace_errors(
        {**raw, "metadata": {"namespace": "default"}}, "densenet"
    )
    assert "densenet" in error


def test_the_loadtest_overlay_targets_the_service_in_its_own_namespace():
    for path, namespace in (
        (ROOT / "loadtest" / "k8s", None),
        (ROOT / "k8s-overlays" / "loadtest", "densenet"),
    ):
        docs = paths.render(path)
        (master,) = [
            d for d in docs if d["kind"] == "Deployment" and "master" in d["metadata"]["name"]
        ]
        assert master["metadata"].get("namespace") == namespace
        env = {
            e["name"]: e.get("value")
            for e in master["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert (
            env["LOCUST_HOST"] == f"http://densenet-cpu.{namespace or 'default'}.svc.cluster.local"
        )


def compose_service() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["densenet"]


def compose_errors(service: dict) -> list[str]:
    """The service's own rule (everything admitted fits the memory limit), with the in-memory
    /tmp sized for every upload's spooled part and counted against the limit."""
    settings = Settings(**{k.lower(): v for k, v in service.get("environment", {}).items()})
    limit = int(service["mem_limit"].rstrip("m")) * 2**20
    tmpfs = [
        v for v in service.get("volumes", []) if isinstance(v, dict) and v.get("type") == "tmpfs"
    ]
    if not tmpfs or not tmpfs[0].get("tmpfs", {}).get("size"):
        return ["/tmp is an unsized tmpfs: uploads could fill the memory limit"]
    size = int(tmpfs[0]["tmpfs"]["size"])
    errors = []
    if size < settings.uploads * settings.max_body_bytes:
        errors.append(f"/tmp ({size}) holds fewer than {settings.uploads} spooled uploads")
    if settings.max_image_bytes * settings.max_queue_size + size > limit:
        errors.append("admitted images + /tmp exceed mem_limit")
    if admitted_bytes(settings, "densenet-cpu") > limit:
        errors.append("admitted work exceeds mem_limit")
    return errors


def test_the_local_stack_admits_what_its_memory_holds():
    broken = {**compose_service(), "environment": {"MAX_QUEUE_SIZE": "8"}, "volumes": []}
    assert compose_errors(broken) == [
        "/tmp is an unsized tmpfs: uploads could fill the memory limit"
    ]
    sized = {**broken, "volumes": compose_service()["volumes"]}
    assert "admitted images + /tmp exceed mem_limit" in compose_errors(sized)
    assert compose_errors(compose_service()) == []
    # The same limits as the CPU revision, where the memory arithmetic is written down.
    cpu = env_of(load(CPU_KSVC))
    for name in (
        "MAX_QUEUE_SIZE",
        "MAX_IMAGE_BYTES",
        "MAX_BODY_BYTES",
        "MAX_UPLOADS",
        "MAX_JSON_BYTES",
    ):
        assert compose_service()["environment"][name] == cpu[name], name
