"""Graceful shutdown below the app (service/graceful.py, HttpProtocol.shutdown), over real
sockets to a real uvicorn with a fake engine: the listener stops without resetting its
backlog, and a connection closes only between requests."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from service.graceful import accept_backlog, refuse_new_connections
from tests.support import fake_uvicorn
from tests.unit.test_protocol import connect

HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def read_one(sock: socket.socket) -> bytes:
    """One response to a GET /healthz (its small JSON body ends in '}')."""
    data = b""
    while not data.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer after {data!r}"
        data += chunk
    return data


def listener_stopped(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.05).close()
    except OSError:  # refused, or the SYN dropped by the shutdown filter
        return True
    return False


def wait_for_stop(url: str) -> None:
    deadline = time.monotonic() + 5
    while not listener_stopped(url):
        assert time.monotonic() < deadline, "the server never stopped listening"
        time.sleep(0.01)


@pytest.mark.skipif(sys.platform != "linux", reason="socket filters are Linux's")
def test_the_listener_refuses_new_connections_and_its_backlog_is_accepted():
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = listener.getsockname()[1]
    waiting = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(3)]
    assert refuse_new_connections(listener)
    with pytest.raises(OSError):  # its SYN is dropped: no connection, nothing to reset
        socket.create_connection(("127.0.0.1", port), timeout=0.3)
    accepted = accept_backlog(listener)
    assert len(accepted) == 3
    for client, conn in zip(waiting, accepted, strict=True):
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.close()
        client.close()
    listener.close()


def test_a_request_sent_on_an_idle_connection_as_shutdown_begins_is_answered():
    with fake_uvicorn() as (url, server):
        sock = connect(url)
        sock.sendall(HEAD)
        assert read_one(sock).startswith(b"HTTP/1.1 200 ")
        server.should_exit = True
        wait_for_stop(url)
        sock.sendall(HEAD)  # the client had no reason to think the connection was closing
        answer = read_one(sock)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in answer
        assert sock.recv(1) == b""  # then closed, between requests


def test_a_head_arriving_during_shutdown_is_answered_then_the_connection_closes():
    with fake_uvicorn() as (url, server):
        sock = connect(url)
        sock.sendall(HEAD[:20])
        server.should_exit = True
        wait_for_stop(url)
        time.sleep(0.3)  # every connection has been asked to shut down by now
        sock.sendall(HEAD[20:])
        answer = read_one(sock)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in answer
        assert sock.recv(1) == b""


def test_an_idle_connection_is_closed_promptly_on_shutdown():
    with fake_uvicorn() as (url, server):
        sock = connect(url)
        sock.sendall(HEAD)
        read_one(sock)
        begin = time.monotonic()
        server.should_exit = True
        sock.settimeout(5)
        assert sock.recv(1) == b""  # a clean close (FIN), not a reset
        assert time.monotonic() - begin < 2
