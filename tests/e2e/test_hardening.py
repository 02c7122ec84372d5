"""Hostile images against a real server configured as the CPU revision: work per image is
bounded before decoding, and the process's peak memory stays inside the pod's limit."""

from __future__ import annotations

import concurrent.futures
import io
import json
import signal
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from service.config import Settings
from tests.support import ROOT, http_client

CPU_KSVC = ROOT / "k8s" / "densenet-cpu.yaml"


def cpu_revision_env() -> dict[str, str]:
    doc = yaml.safe_load(CPU_KSVC.read_text())
    container = doc["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    return {k: v for k, v in env.items() if k not in {"MODEL_DIR", "LOG_LEVEL"}}


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

    # The worst image the budget admits, MAX_QUEUE_SIZE at once: a 3500x3500 RGB PNG costs
    # 3500 x 3500 x 4 bytes decoded (+ a tiny resize) = 49,004,096 <= 50,331,648.
    x = np.linspace(0, 255, 3500, dtype=np.uint8)
    worst = png(np.stack([np.broadcast_to(x, (3500, 3500))] * 3, axis=-1))
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


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS (Linux >= 4.0)


def test_v2_requests_of_worst_images_and_worst_json_stay_inside_the_limit(server):
    """The CPU revision's MAX_QUEUE_SIZE requests at once, each MAX_IMAGES_PER_REQUEST of the
    worst images the budget admits (decoded one at a time), then each a MAX_JSON_BYTES
    header of empty objects (the worst memory per byte of JSON)."""
    env = cpu_revision_env()
    admitted, per_request = int(env["MAX_QUEUE_SIZE"]), int(env["MAX_IMAGES_PER_REQUEST"])
    x = np.linspace(0, 255, 3500, dtype=np.uint8)
    worst = png(np.stack([np.broadcast_to(x, (3500, 3500))] * 3, axis=-1))
    blob = b"".join(len(worst).to_bytes(4, "little") + worst for _ in range(per_request))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [per_request],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    json_limit = int(env["MAX_JSON_BYTES"])
    objects = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[]}],"x":['
    junk = objects + b"{}," * ((json_limit - len(objects) - 4) // 3) + b"{}]}"
    assert len(junk) <= json_limit

    def infer(body: bytes, headers: dict[str, str]) -> int:
        url = f"{server.url}/v2/models/densenet/infer"
        return httpx.post(url, content=body, headers=headers, timeout=120).status_code

    reset_peak_rss(server.process.pid)
    before = peak_rss(server.process.pid)
    binary = {"inference-header-content-length": str(len(header))}
    with concurrent.futures.ThreadPoolExecutor(admitted) as pool:
        images = list(pool.map(lambda _: infer(header + blob, binary), range(admitted)))
        parsed = list(pool.map(lambda _: infer(junk, {}), range(admitted)))
    assert images.count(200) >= 1 and set(images) <= {200, 503}
    assert set(parsed) <= {400, 503}  # parsed, then refused: FP32 shape [1] is not the model's
    peak = peak_rss(server.process.pid)
    budget = admitted * (int(env["MAX_IMAGE_BYTES"]) + 25 * json_limit)
    print(
        f"\n/v2 peak RSS: {peak / 2**20:.0f} MiB ({(peak - before) / 2**20:.0f} MiB over "
        f"{before / 2**20:.0f}) with {admitted} x {per_request} worst images "
        f"({images.count(200)} served) and {admitted} worst JSON headers; budget "
        f"{budget / 2**20:.0f} MiB, limit {memory_limit_bytes() / 2**20:.0f} MiB"
    )
    assert peak - before <= budget
    assert peak < memory_limit_bytes()


def stall(url: str, declared: int = 100_000) -> socket.socket:
    """A client that sends headers and 10 bytes of a body it says is longer, then waits."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
        + b"0123456789"
    )
    return sock


def test_stalled_uploads_neither_starve_other_requests_nor_keep_their_place(build, serve):
    env = {**cpu_revision_env(), "BODY_TIMEOUT_SECONDS": "3"}
    build(env["MODEL_VARIANT"])
    server = serve(**env)
    queue = int(env["MAX_QUEUE_SIZE"])
    ramp = png(np.linspace(0, 255, 64 * 64, dtype=np.uint8).reshape(64, 64))
    stalled = [stall(server.url) for _ in range(queue)]  # as many as the model has places
    started = time.monotonic()
    try:
        with http_client(server) as client:
            time.sleep(0.5)
            answered = [client.post("/predict", files={"file": ("r.png", ramp)}) for _ in range(10)]
            assert [r.status_code for r in answered] == [200] * 10
        for sock in stalled:  # each is answered 408 once its body is BODY_TIMEOUT_SECONDS late
            answer = b""
            while chunk := sock.recv(4096):  # the server closes after the 408
                answer += chunk
            text = answer.decode(errors="replace")
            assert text.startswith("HTTP/1.1 408"), text[:200]
            assert '"code":"request_timeout"' in text
        assert time.monotonic() - started < 3 + 5
    finally:
        for sock in stalled:
            sock.close()
    with http_client(server) as client:
        text = client.get("/metrics").text
    assert f'requests_total{{route="/predict",status="408"}} {float(queue)}' in text
    assert 'requests_total{route="/predict",status="503"}' not in text


def test_shutdown_ends_stalled_requests_within_the_revisions_grace_period(build, serve):
    """SIGTERM with a stalled body and a stalled head in flight: the body is answered 408 at
    BODY_TIMEOUT_SECONDS, the head 408 at HEADER_TIMEOUT_SECONDS (a started request is given
    its chance, not cut off), and the process exits well inside
    terminationGracePeriodSeconds (Knative sets it to the revision's timeoutSeconds)."""
    env = cpu_revision_env()
    build(env["MODEL_VARIANT"])
    server = serve(**env)
    grace = yaml.safe_load(CPU_KSVC.read_text())["spec"]["template"]["spec"]["timeoutSeconds"]
    body = stall(server.url)
    host, port = server.url.removeprefix("http://").split(":")
    head = socket.create_connection((host, int(port)), timeout=30)
    head.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.5)
    started = time.monotonic()
    server.process.terminate()
    # uvicorn re-raises the SIGTERM it handled once it has shut down: the usual status of a
    # process stopped by that signal.
    assert server.process.wait(timeout=grace) in (0, -signal.SIGTERM)
    took = time.monotonic() - started
    answer = b""
    while chunk := body.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"HEADER_TIMEOUT_SECONDS" in head.recv(4096)
    assert head.recv(4096) == b""
    head_timeout = Settings.model_fields["header_timeout_seconds"].default
    slowest = max(
        float(env["BODY_TIMEOUT_SECONDS"]), float(env.get("HEADER_TIMEOUT_SECONDS", head_timeout))
    )
    assert took < float(env["DRAIN_SECONDS"]) + slowest + 3 < grace
