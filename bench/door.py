"""Count Datastore RPCs at the database's door: a TCP relay in front of the emulator.

Every gRPC call opens one HTTP/2 stream with one HEADERS frame from the client (RFC 9113,
sections 4.1 and 8.1), so counting the HEADERS frames that clients send counts their calls,
whichever process or library made them, with nothing changed inside the servers. Failed calls
count too. The relay reads only frame headers and costs a few tens of microseconds per call.
"""

from __future__ import annotations

import contextlib
import socket
import threading

PREFACE_BYTES = 24
"""The client connection preface, `PRI * HTTP/2.0…`, sent before any frame."""
HEADERS = 0x1


class RpcDoor:
    """A relay to `upstream` (host:port) on a port of its own; `rpcs` is the calls so far."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._rpcs = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def rpcs(self) -> int:
        """Calls made through the door so far."""
        with self._lock:
            return self._rpcs

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            upstream = socket.create_connection(self._upstream)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        frames = _ClientFrames()
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if count and (calls := frames.feed(data)):
                    with self._lock:
                        self._rpcs += calls
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _ClientFrames:
    """Reads the frame headers of a client's byte stream, skipping payloads, counting HEADERS."""

    def __init__(self) -> None:
        self._skip = PREFACE_BYTES
        self._head = b""

    def feed(self, data: bytes) -> int:
        """The HEADERS frames that start in this chunk."""
        found, at = 0, 0
        while at < len(data):
            if self._skip:
                step = min(self._skip, len(data) - at)
                self._skip -= step
                at += step
                continue
            taken = data[at : at + 9 - len(self._head)]
            self._head += taken
            at += len(taken)
            if len(self._head) == 9:
                found += self._head[3] == HEADERS
                self._skip = int.from_bytes(self._head[:3], "big")
                self._head = b""
        return found
