"""Graceful shutdown at the listening socket: stop taking connections, reset none.

uvicorn's shutdown closes its listening sockets at once, and the kernel resets every
connection still in their backlog: connections whose handshake it completed for us, on which
clients have already sent requests. :class:`Server` first stops *new* connections: a socket
filter on each listening socket drops SYNs, so no handshake starts (the client retries its
SYN a second later, meets the closed port and is refused: it never had a connection), while
handshakes already under way complete and are accepted as usual. After
:data:`HANDSHAKE_GRACE_S` the backlog is accepted to empty and only then are the sockets
closed; uvicorn's shutdown then asks every connection, these too, to finish
(:meth:`service.protocol.HttpProtocol.shutdown`).

Where the filter cannot be attached (not Linux), the backlog is still accepted to empty just
before the close, which leaves only the connections completing in that instant exposed.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import struct
import sys
from typing import Any

import uvicorn

log = logging.getLogger("service.graceful")

# A handshake under way when the filter goes on has its SYN-ACK sent: its final ACK is one
# round trip away (well under a millisecond inside a cluster, tens of milliseconds across
# regions). Waiting this long lets those complete and be accepted.
HANDSHAKE_GRACE_S = 0.2
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
# Classic BPF over the TCP header (what a TCP socket's filter sees): load the flags byte, keep
# SYN and ACK, drop the segment when only SYN is set (a new connection), accept everything else.
_DROP_NEW_CONNECTIONS = (
    (0x30, 0, 0, 13),  # ldb [13]
    (0x54, 0, 0, 0x12),  # and #(SYN | ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN, drop, accept
    (0x06, 0, 0, 0),  # drop: ret #0
    (0x06, 0, 0, 0xFFFFFFFF),  # accept: ret #-1
)


def refuse_new_connections(sock: Any) -> bool:
    """Make the listening TCP socket ``sock`` drop new SYNs; False where that is not possible."""
    if sys.platform != "linux" or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    code = ctypes.create_string_buffer(
        b"".join(struct.pack("HBBI", *insn) for insn in _DROP_NEW_CONNECTIONS)
    )
    program = struct.pack("HL", len(_DROP_NEW_CONNECTIONS), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
    except OSError as exc:
        log.warning("cannot filter new connections on the listening socket: %s", exc)
        return False
    return True


def accept_backlog(sock: Any) -> list[socket.socket]:
    """Accept every connection waiting on the listening socket ``sock``, without blocking."""
    listener = socket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno()))
    accepted: list[socket.socket] = []
    try:
        listener.setblocking(False)
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return accepted
            except OSError as exc:  # e.g. EMFILE: what is left is reset with the socket
                log.warning("accepting the backlog at shutdown: %s", exc)
                return accepted
            accepted.append(conn)
    finally:
        listener.close()


class Server(uvicorn.Server):
    """uvicorn's server whose shutdown closes its listening sockets without resetting the
    connections in their backlog."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Each connection's next answer is its last from now on; uvicorn's shutdown asks
        # again, once the connections taken from the backlog are among them.
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await self.stop_listening()
        await super().shutdown(sockets)

    async def stop_listening(self) -> None:
        """Refuse new connections, let those under way arrive, accept the backlog, close."""
        listeners = [sock for server in self.servers for sock in server.sockets or ()]
        if [sock for sock in listeners if refuse_new_connections(sock)]:
            await asyncio.sleep(HANDSHAKE_GRACE_S)  # the loop keeps accepting meanwhile
        # No await from here to the close: nothing else can accept or complete in between.
        backlog = [conn for sock in listeners for conn in accept_backlog(sock)]
        for server in self.servers:
            server.close()
        if backlog:
            log.info("shutdown: accepted %d connections from the backlog", len(backlog))
        loop = asyncio.get_running_loop()
        for conn in backlog:
            await loop.connect_accepted_socket(self._protocol, conn)

    def _protocol(self) -> asyncio.Protocol:
        # As uvicorn's startup builds each connection's protocol.
        config = self.config
        protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol
