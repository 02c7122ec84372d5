"""The deploy paths the docs give, modelled offline: their shell blocks, what
``kustomize edit set image`` writes, skaffold's build and image replacement, kind's loaders.

Read from the tools' own code: skaffold's ``pkg/skaffold/kubernetes/manifest/images.go``
(images referenced by digest are left as they are) and ``build/docker`` (the Engine API's
classic builder unless ``useBuildkit``/``useDockerCLI``); kind's ``load docker-image`` (asks the
docker daemon) and ``load image-archive``; kustomize's image transformer.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

KUBECTL = Path(sys.executable).parent / "kubectl"
SHELL_LANGUAGES = {"bash", "sh", "console", "shell", ""}
SET_IMAGE = re.compile(r"kustomize edit set image((?:\s+[^\s=]+=[^\s]+)+)")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$|@sha256:DIGEST$")
DIGESTFILE = re.compile(r"--digestfile[ =](\S+)")


def shell_blocks(markdown: str) -> list[str]:
    """Every fenced shell block (bash, sh, console or unlabelled), with backslash
    continuations joined into one line."""
    blocks: list[str] = []
    lang, lines = None, []
    for line in markdown.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in SHELL_LANGUAGES:
                    blocks.append("\n".join(lines).replace("\\\n", " "))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def set_image_edits(block: str) -> dict[str, str]:
    """``kustomize edit set image NAME=NEW[@DIGEST]`` arguments in a block: name -> new."""
    edits: dict[str, str] = {}
    for match in SET_IMAGE.finditer(block):
        for pair in match.group(1).split():
            name, new = pair.split("=", 1)
            edits[name] = new
    return edits


def apply_set_image(kustomization: dict[str, Any], edits: dict[str, str]) -> dict[str, Any]:
    """What ``kustomize edit set image`` writes: an ``images`` entry per name (updated in
    place when the name has one), with ``newName`` and ``digest`` or ``newTag``."""
    out = copy.deepcopy(kustomization)
    images = out.setdefault("images", [])
    for name, new in edits.items():
        entry = next((e for e in images if e["name"] == name), None)
        if entry is None:
            entry = {"name": name}
            images.append(entry)
        for key in ("newName", "newTag", "digest"):
            entry.pop(key, None)
        if "@" in new:
            entry["newName"], entry["digest"] = new.split("@", 1)
        elif ":" in new.rsplit("/", 1)[-1]:
            entry["newName"], entry["newTag"] = new.rsplit(":", 1)
        else:
            entry["newName"] = new
    return out


def render(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH``."""
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_overlay(overlay: str, edits: dict[str, str], tmp: Path) -> list[dict[str, Any]]:
    """Render ``k8s-overlays/OVERLAY`` after ``edits`` in a copy of the repository's manifests
    (the commands edit the kustomization in place; the checkout stays as it is)."""
    copy_root = tmp / "repo"
    if not copy_root.exists():
        for folder in ("k8s", "k8s-overlays", "loadtest/k8s"):
            shutil.copytree(ROOT / folder, copy_root / folder)
    target = copy_root / "k8s-overlays" / overlay / "kustomization.yaml"
    original = yaml.safe_load((ROOT / "k8s-overlays" / overlay / "kustomization.yaml").read_text())
    target.write_text(yaml.safe_dump(apply_set_image(original, edits)))
    return render(target.parent)


def images_of(docs: list[dict[str, Any]]) -> list[str]:
    """The container images of the rendered Knative Services and Deployments."""
    out = []
    for doc in docs:
        if doc["kind"] in {"Service", "Deployment"} and "template" in doc.get("spec", {}):
            out += [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    return out


def with_pushed_digests(block: str) -> str:
    """``$(cat FILE)`` read back from a ``--digestfile FILE`` the block's own push wrote, as
    the digest it holds (a stand-in); a file no push in the block wrote stays unexpanded."""
    for written in DIGESTFILE.findall(block):
        name = re.escape(Path(written).name)
        block = re.sub(rf"\$\(cat (?:\S+/)?{name}\)", "sha256:" + "d" * 64, block)
    return block


def registry_apply_errors(block: str, tmp: Path) -> list[str]:
    """For each ``kubectl apply -k k8s-overlays/X`` in a block: after the block's own
    ``kustomize edit set image`` commands, every image must be a registry image by digest.
    A kind.local name left in place is pulled from nowhere on such a cluster."""
    errors = []
    edits = set_image_edits(with_pushed_digests(block))
    for overlay in re.findall(r"kubectl apply -k k8s-overlays/([\w-]+)", block):
        for image in images_of(render_overlay(overlay, edits, tmp)):
            if image.startswith("kind.local/") or not DIGEST.search(image):
                errors.append(
                    f"kubectl apply -k k8s-overlays/{overlay} deploys {image}: the block does "
                    "not set it (kustomize edit set image NAME=REGISTRY/...@sha256:DIGEST)"
                )
    return errors


def kind_load_errors(block: str) -> list[str]:
    """A block that builds with podman must not load with ``kind load docker-image``, which
    asks the docker daemon (which has never seen the image)."""
    podman = "podman build" in block or "ENGINE=podman" in block
    if podman and "kind load docker-image" in block:
        return ["podman-built image loaded with `kind load docker-image`: kind asks docker"]
    return []


SKAFFOLD_NEEDS_BUILDKIT = re.compile(r"^\s*RUN\s+--mount", re.MULTILINE)


def skaffold_configs(skaffold: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The base config and each profile as skaffold runs it (a profile's build and manifests
    replace the base's)."""
    configs = {"base": skaffold}
    for profile in skaffold.get("profiles", []):
        replaced = {k: profile[k] for k in ("build", "manifests") if k in profile}
        configs[profile["name"]] = {**skaffold, **replaced}
    return configs


def buildkit_errors(config: dict[str, Any]) -> list[str]:
    """Dockerfiles with ``RUN --mount`` need BuildKit; skaffold's Docker builder uses the
    Engine API's classic builder unless ``local.useBuildkit`` or ``local.useDockerCLI``."""
    local = config["build"].get("local", {})
    if local.get("useBuildkit") or local.get("useDockerCLI"):
        return []
    return [
        f"{a['image']}: {a['docker']['dockerfile']} uses RUN --mount, which the classic builder "
        "refuses (set build.local.useBuildkit)"
        for a in config["build"]["artifacts"]
        if SKAFFOLD_NEEDS_BUILDKIT.search((ROOT / a["docker"]["dockerfile"]).read_text())
    ]


def skaffold_replacement_errors(config: dict[str, Any]) -> list[str]:
    """Each rendered Knative Service image must be one skaffold replaces: named as an artifact,
    and not by digest (skaffold leaves a digest as it is, so a placeholder would deploy)."""
    artifacts = {a["image"] for a in config["build"]["artifacts"]}
    errors = []
    for path in config["manifests"]["kustomize"]["paths"]:
        for doc in render(ROOT / path):
            if doc["kind"] != "Service" or doc["apiVersion"] != "serving.knative.dev/v1":
                continue
            for image in images_of([doc]):
                last = image.rsplit("/", 1)[-1]
                base = image.rsplit(":", 1)[0] if ":" in last else image
                if "@" in image:
                    errors.append(f"{path}: {image} is by digest: skaffold leaves it as it is")
                elif base not in artifacts:
                    errors.append(f"{path}: {image} is not an artifact skaffold builds")
    return errors


def monitor_namespace_errors(monitor: dict[str, Any], service_namespace: str) -> list[str]:
    """A PodMonitor watches its namespaceSelector's namespaces, else only its own."""
    selector = monitor["spec"].get("namespaceSelector", {})
    if selector.get("any"):
        return []
    watched = set(selector.get("matchNames", [monitor["metadata"].get("namespace", "default")]))
    if service_namespace not in watched:
        return [f"PodMonitor watches {sorted(watched)}; the Service runs in {service_namespace}"]
    return []
