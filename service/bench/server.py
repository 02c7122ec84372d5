"""A real ``densenet serve`` process on a loopback port: the one way cold start, the load-test
runner and the tests start, wait for and stop a server.

The server's output goes to a log file (never an unread pipe, which a chatty server would
fill and block on); a server that exits or never becomes ready raises with the log's tail.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """One request on a fresh connection to 127.0.0.1 (stdlib only: no client warm-up cost)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class ServerFailed(RuntimeError):
    """The server exited, or did not become ready in time; the message ends with its log."""


@dataclass
class ServerProcess:
    """A started server: its process, address, log, and the clock reading just before exec."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started: float

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the server has written so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float) -> float:
        """Poll ``predicate`` until true; returns ``time.perf_counter()`` at that moment."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"server exited with {self.process.returncode} before {what}:\n"
                    f"{self.log()[-3000:]}"
                )
            if predicate():
                return time.perf_counter()
            time.sleep(0.002)
        raise ServerFailed(f"no {what} within {timeout:.0f}s:\n{self.log()[-3000:]}")

    def port_open(self) -> bool:
        """Whether the server accepts connections."""
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def is_ready(self) -> bool:
        """Whether ``/readyz`` answers 200."""
        try:
            return http_request(self.port, "GET", "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait for ``/readyz`` to answer 200; returns the clock reading when it did."""
        return self.wait_for(self.is_ready, "readiness", timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    env: dict[str, str],
    log_path: Path,
    *,
    cpus: set[int] | None = None,
    cwd: Path | None = None,
    command: list[str] | None = None,
) -> ServerProcess:
    """Exec ``python -m service serve`` (or ``command``, which reads ``HOST``/``PORT`` as the
    service does) on a free loopback port (``env`` adds to os.environ).

    ``cpus`` pins the server to those CPUs (so a load generator can have the others); the
    mask is set right after exec, before the interpreter has started any thread.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command or [sys.executable, "-m", "service", "serve"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    if cpus:
        os.sched_setaffinity(process.pid, cpus)
    return ServerProcess(process, port, log_path, started)


@contextlib.contextmanager
def spawn_server(
    env: dict[str, str],
    log_path: Path,
    *,
    cpus: set[int] | None = None,
    wait_ready: bool = True,
    timeout: float = READY_TIMEOUT_S,
    cwd: Path | None = None,
    command: list[str] | None = None,
) -> Iterator[ServerProcess]:
    """A server for the ``with`` block: started, ready (unless ``wait_ready=False``), stopped."""
    server = start_server(env, log_path, cpus=cpus, cwd=cwd, command=command)
    try:
        if wait_ready:
            server.wait_ready(timeout)
        yield server
    finally:
        server.stop()
