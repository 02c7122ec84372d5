"""Connection limits below the app (service/protocol.py), over real sockets to a real uvicorn
serving the app with a fake engine: head size and time, framing errors, lingering close."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import httpx
import pytest


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response off ``sock``, read until the server closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["status"] == expected
    return str(error["message"])


def test_an_oversized_head_is_refused_as_it_arrives_without_stalling_probes(serve_fake):
    url = serve_fake(max_header_bytes=16_384)
    sock = connect(url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    probes: list[float] = []
    refused_after = 0
    try:  # 64 MiB offered in 64 KiB pieces; the server must stop it near 16 KiB
        for i in range(1024):
            sock.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 65_000))
            refused_after += 65_000
            start = time.perf_counter()
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            probes.append(time.perf_counter() - start)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert refused_after <= 4 * 65_000, "the server kept reading an oversized head"
    status, headers, body = read_response(sock)
    assert "MAX_HEADER_BYTES" in assert_json_error(status, headers, body, 431)
    assert max(probes, default=0) < 1.0
    # A head just under the limit is served.
    ok = httpx.get(f"{url}/healthz", headers={"x-pad": "a" * 15_000}, timeout=5)
    assert ok.status_code == 200


def head_of(size: int, target: bytes = b"/healthz") -> bytes:
    """A GET head of exactly ``size`` bytes (request line, headers, blank line)."""
    start = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("piece", [None, 1000], ids=["one-send", "1000-byte-sends"])
def test_the_head_limit_holds_at_its_byte_whatever_the_read_size(serve_fake, piece):
    limit = 65_536
    url = serve_fake(max_header_bytes=limit)
    for size, expected in ((limit, 200), (limit + 1, 431)):
        head = head_of(size)
        assert len(head) == size
        sock = connect(url)
        for start in range(0, size, piece or size):
            sock.sendall(head[start : start + (piece or size)])
        if expected == 200:  # answered, and the connection kept: close it to read the end
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            sock.close()
            continue
        status, headers, body = read_response(sock)
        assert "MAX_HEADER_BYTES" in assert_json_error(status, headers, body, 431)


def test_a_long_url_counts_toward_the_head_limit(serve_fake):
    url = serve_fake()  # the default limit, 64 KiB
    sock = connect(url)
    sock.sendall(b"GET /healthz?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = read_response(sock)
    assert "MAX_HEADER_BYTES" in assert_json_error(status, headers, body, 431)


def test_a_stalled_head_gets_408_and_a_silent_connection_is_closed(serve_fake):
    url = serve_fake(header_timeout_seconds=0.5)
    started = connect(url)
    started.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    silent = connect(url)
    begin = time.monotonic()
    status, headers, body = read_response(started)
    assert "HEADER_TIMEOUT_SECONDS" in assert_json_error(status, headers, body, 408)
    assert silent.recv(1) == b""  # closed without a word: it never asked anything
    assert time.monotonic() - begin < 3
    # A request that sends its head in time is not affected, on a connection kept alive.
    with httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.3)  # 0.9 s in all on one connection: the timer covers each head only


@pytest.mark.parametrize(
    "head",
    [
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
    ids=["te-and-cl", "duplicate-cl", "nul-in-header", "bad-version"],
)
def test_framing_errors_get_the_json_error_shape(serve_fake, head):
    url = serve_fake()
    sock = connect(url)
    sock.sendall(head)
    status, headers, body = read_response(sock)
    assert assert_json_error(status, headers, body, 400).startswith("malformed HTTP request")


def hold_upload(url: str) -> socket.socket:
    """A /predict whose body never finishes: it holds an upload place."""
    sock = connect(url)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000\r\n\r\n0123456789"
    )
    return sock


def test_connection_close_clients_receive_their_503s(serve_fake):
    """The 503 is written before the body is read; the client is still sending it. Closed at
    once, the socket would answer the rest with a reset: the client's send fails
    (BrokenPipeError) and it never reads its 503."""
    url = serve_fake(max_uploads=1, body_timeout_seconds=60, max_body_bytes=8 * 2**20)
    holder = hold_upload(url)
    time.sleep(0.2)

    def post(_: int) -> int | str:
        sock = connect(url)
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Connection: close\r\nContent-Length: 4000000\r\n\r\n"
        )
        time.sleep(0.05)  # the head is answered before the body follows
        try:
            for _ in range(40):
                sock.sendall(bytes(100_000))
            status, _, body = read_response(sock)
        except OSError as exc:
            return type(exc).__name__
        finally:
            sock.close()
        assert json.loads(body)["error"]["code"] == "overloaded"
        return status

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(post, range(16)))
    holder.close()
    assert outcomes == [503] * 16


def test_a_body_still_coming_after_an_early_answer_is_dropped_then_cut_off(serve_fake):
    """413 on Content-Length: the answer arrives first, the server reads and drops what the
    client goes on sending, and a client that never stops is cut off within seconds."""
    url = serve_fake(max_body_bytes=65_536)
    sock = connect(url)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    answer = b""
    while b"}}" not in answer:
        answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer
    begin = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while time.monotonic() - begin < 30:
            sock.sendall(b"x" * 16384)
    assert time.monotonic() - begin < 5
