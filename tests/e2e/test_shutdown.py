"""SIGTERM under load on a real ``densenet serve``: every request the kernel accepted for the
server gets an answer, and the process exits promptly.

Nine clients post 1.2 MP JPEGs as fast as they are answered: six on keep-alive connections
(urllib3, which, like every pooling client, checks a pooled connection for the server's FIN
before reusing it) and three with ``Connection: close`` (a fresh connection per request, so
some sit in the listen backlog when the server stops). A request is *lost* when it was written
on an established connection and then got a reset, or the connection closed without a
response. A refused connection is not lost: the kernel never accepted it for the server.
"""

from __future__ import annotations

import io
import json
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import urllib3
from PIL import Image
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

RUNS = 3
KEEP_ALIVE_CLIENTS = 6
CLOSING_CLIENTS = 3
# With no drain the server closes its listener at once, so its exit must be quick; with a
# drain it also waits DRAIN_SECONDS. Either way a client's last request needs one inference.
EXIT_MARGIN_S = 6.0


@pytest.fixture(scope="module")
def large_jpeg(sample_photos) -> bytes:
    """One of scikit-learn's photos scaled to 1280 x 960 (1.2 MP), as a JPEG."""
    img = Image.open(io.BytesIO(sample_photos[0])).convert("RGB").resize((1280, 960))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Tally:
    """What every client saw, under one lock."""

    outcomes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    not_json: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if outcome == "lost":
                self.lost.append(detail)


def strict_json(body: bytes) -> object:
    """``json.loads`` that refuses NaN and Infinity, as Go's and Java's parsers do."""

    def refuse(token: str) -> object:
        raise ValueError(f"{token} is not JSON")

    return json.loads(body, parse_constant=refuse)


def client_loop(
    url: str, body: bytes, closing: bool, stop: threading.Event, tally: Tally, sigterm_at: list
) -> None:
    headers = {"Content-Type": "image/jpeg"}
    if closing:
        headers["Connection"] = "close"
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", int(url.rsplit(":", 1)[1]), maxsize=1, retries=False, timeout=30.0
    )
    while not stop.is_set():
        try:
            response = pool.urlopen("POST", "/predict", body=body, headers=headers)
        except NewConnectionError:
            tally.add("refused")
            time.sleep(0.01)
            continue
        except (ProtocolError, ReadTimeoutError) as exc:
            after = f"{time.perf_counter() - sigterm_at[0]:.3f}s" if sigterm_at else "before"
            tally.add("lost", f"{'close' if closing else 'keep-alive'} {after}: {exc!r}")
            continue
        try:
            strict_json(response.data)
        except ValueError:
            tally.not_json.append(response.data[:200])
        if response.status == 200:
            tally.add("served")
        elif response.status == 503 and response.headers.get("Retry-After"):
            tally.add("refused-503")
        else:
            tally.add(f"status-{response.status}")
    pool.close()


@pytest.mark.parametrize("drain_seconds", ["0", "1"])
def test_sigterm_under_load_loses_no_request(build, serve, large_jpeg, drain_seconds):
    build("baseline")
    rng = random.Random(int(drain_seconds))
    totals = Tally()
    for _ in range(RUNS):
        # Room for every client, so all nine are in flight when the signal comes.
        server = serve(MODEL_VARIANT="baseline", DRAIN_SECONDS=drain_seconds, MAX_QUEUE_SIZE="16")
        stop = threading.Event()
        sigterm_at: list[float] = []
        threads = [
            threading.Thread(
                target=client_loop,
                args=(server.url, large_jpeg, i >= KEEP_ALIVE_CLIENTS, stop, totals, sigterm_at),
                daemon=True,
            )
            for i in range(KEEP_ALIVE_CLIENTS + CLOSING_CLIENTS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.6, 1.2))
        sigterm_at.append(time.perf_counter())
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=float(drain_seconds) + EXIT_MARGIN_S + 30)
        exit_s = time.perf_counter() - sigterm_at[0]
        time.sleep(0.3)  # the clients meet the closed port
        stop.set()
        for thread in threads:
            thread.join(timeout=35)
        # uvicorn ends a SIGTERM'd server by re-raising the signal: a clean stop reads as either.
        assert server.process.returncode in (0, -signal.SIGTERM), server.log()[-2000:]
        assert exit_s < float(drain_seconds) + EXIT_MARGIN_S, f"exit took {exit_s:.2f}s"
    print(f"\nDRAIN_SECONDS={drain_seconds}, {RUNS} runs: {dict(totals.outcomes)}")
    assert totals.lost == [], f"{len(totals.lost)} requests without an answer: {totals.lost}"
    assert totals.not_json == []
    assert totals.outcomes["served"] > RUNS * 9
