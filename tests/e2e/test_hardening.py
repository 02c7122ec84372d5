"""Hostile images against a real server configured as the CPU revision: work per image is
bounded before decoding, and the process's peak memory stays inside the pod's limit."""

from __future__ import annotations

import concurrent.futures
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.support import ROOT, http_client

CPU_KSVC = ROOT / "k8s" / "densenet-cpu.yaml"


def cpu_revision_env() -> dict[str, str]:
    doc = yaml.safe_load(CPU_KSVC.read_text())
    container = doc["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    return {
        k: env[k]
        for k in (
            "MODEL_VARIANT",
            "MODEL_RUNTIME",
            "NUM_THREADS",
            "MAX_QUEUE_SIZE",
            "MAX_IMAGE_BYTES",
            "MAX_BATCH_SIZE",
        )
    }


def memory_limit_bytes() -> int:
    doc = yaml.safe_load(CPU_KSVC.read_text())
    limit = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    return int(limit[:-2]) * 2**20


def peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident memory so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(build, serve):
    env = cpu_revision_env()
    build(env["MODEL_VARIANT"])
    return serve(**env)


def post(server, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict", content=data, headers={"content-type": "image/png"}, timeout=120
    )


def test_hostile_images_are_refused_before_decoding_and_memory_stays_bounded(server):
    side = int(40_000_000**0.5) - 1  # just under MAX_IMAGE_PIXELS
    hostile = {
        "1,000,000x1 PNG": encoded(Image.new("L", (1_000_000, 1)), "PNG"),
        "1x1,000,000 PNG": encoded(Image.new("L", (1, 1_000_000)), "PNG"),
        "65,500x1 JPEG": encoded(Image.new("L", (65_500, 1)), "JPEG"),
        "40 MP 16-bit PNG": png(np.zeros((side, side), dtype=np.uint16)),
        "40 MP RGBA PNG": png(np.zeros((side, side, 4), dtype=np.uint8)),
    }
    with http_client(server) as client:  # warm: the first request's allocations are normal
        ramp = np.linspace(0, 255, 64 * 64, dtype=np.uint8).reshape(64, 64)
        assert client.post("/predict", files={"file": ("r.png", png(ramp))}).status_code == 200
    before = peak_rss(server.process.pid)
    for name, data in hostile.items():
        response = post(server, data)
        assert response.status_code == 413, (name, response.text)
        assert response.json()["error"]["code"] == "image_too_large"
        assert "MAX_IMAGE_BYTES" in response.json()["error"]["message"], name
    after_hostile = peak_rss(server.process.pid)

    # The worst image the budget admits, MAX_QUEUE_SIZE at once: a 4000x4000 RGB PNG costs
    # 4000 x 4000 x 4 bytes decoded (+ a tiny resize) = 64,004,096 <= 67,108,864.
    x = np.linspace(0, 255, 4000, dtype=np.uint8)
    worst = png(np.stack([np.broadcast_to(x, (4000, 4000))] * 3, axis=-1))
    admitted = int(cpu_revision_env()["MAX_QUEUE_SIZE"])
    with concurrent.futures.ThreadPoolExecutor(admitted) as pool:
        statuses = [r.status_code for r in pool.map(lambda _: post(server, worst), range(admitted))]
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 503}
    peak = peak_rss(server.process.pid)
    budget = admitted * int(cpu_revision_env()["MAX_IMAGE_BYTES"])
    print(
        f"\npeak RSS: {before / 2**20:.0f} MiB warm, {after_hostile / 2**20:.0f} MiB after the "
        f"hostile images, {peak / 2**20:.0f} MiB after {admitted} concurrent worst admitted "
        f"images ({statuses.count(200)} served); limit {memory_limit_bytes() / 2**20:.0f} MiB"
    )
    assert after_hostile - before < 32 * 2**20  # refused before a pixel was decoded
    assert peak - before <= budget
    assert peak < memory_limit_bytes()
    assert server.process.poll() is None
