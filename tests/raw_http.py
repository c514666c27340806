"""HTTP/1.1 over a plain socket, for requests no client library will send (malformed chunks,
bodies cut short, bytes a URL builder would re-encode)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser


@dataclass(frozen=True)
class RawResponse:
    """A response as it came off the wire."""

    status: int
    headers: Message
    body: bytes

    def json(self) -> object:
        """The body as JSON."""
        return json.loads(self.body)


def request_bytes(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    host: str = "127.0.0.1",
) -> bytes:
    """One request, written exactly as given (no Content-Length unless in headers)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def send(port: int, data: bytes, *, timeout: float = 15.0) -> RawResponse:
    """Send bytes, close our side, and read the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the end of a truncated body is the end of the stream
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse(received)


def parse(raw: bytes) -> RawResponse:
    """Split one HTTP/1.1 response into status, headers and body (as long as Content-Length)."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError(f"no complete response in {raw[:200]!r}")
    status_line, _, header_block = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    headers = BytesHeaderParser().parsebytes(header_block)
    length = headers.get("Content-Length")
    body = rest[: int(length)] if length is not None else rest
    return RawResponse(status, headers, body)
